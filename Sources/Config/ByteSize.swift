import Foundation

/// Byte sizes as people write them: `8388608`, `8MiB`, `8 MiB`, `1.5GiB`, `200GB`.
/// Binary units (KiB, MiB, ...) are powers of 1024; decimal ones (KB, MB, ...) of 1000.
public enum ByteSize {
    static let units: [(String, Double)] = [
        ("TiB", 1_099_511_627_776), ("GiB", 1_073_741_824), ("MiB", 1_048_576), ("KiB", 1024),
        ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3), ("B", 1),
    ]

    public static func parse(_ text: String) -> UInt64? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        var number = Substring(trimmed)
        var scale = 1.0
        for (unit, factor) in units where trimmed.hasSuffix(unit) {
            number = trimmed.dropLast(unit.count)
            scale = factor
            break
        }
        guard let value = Double(number.trimmingCharacters(in: .whitespaces)), value >= 0, value.isFinite else { return nil }
        let bytes = (value * scale).rounded()
        guard bytes < 1.8e19, bytes == value * scale || scale > 1 else { return nil }
        return UInt64(bytes)
    }

    /// The largest binary unit that divides evenly, else bytes: `8MiB`, `1536KiB`, `1000B`.
    public static func format(_ bytes: UInt64) -> String {
        for (unit, factor) in units where unit.hasSuffix("iB") {
            let f = UInt64(factor)
            if bytes >= f && bytes % f == 0 { return "\(bytes / f)\(unit)" }
        }
        return "\(bytes)B"
    }
}

