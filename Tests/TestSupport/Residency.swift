// What the tests ask of the kernel's memory and page cache, by mincore(2):
// shared by the unit and integration test targets, so one copy of it.
import Foundation

#if canImport(Glibc)
import Glibc
#endif

public enum Residency {
    /// Pages of `memory` (page-aligned) resident now.
    public static func pages(of memory: UnsafeMutableRawBufferPointer) throws -> Int {
        try flags(memory.baseAddress!, memory.count).filter { $0 & 1 == 1 }.count
    }

    /// Fraction of the file at `path`'s pages that are in the page cache now.
    public static func fraction(ofFile path: String) throws -> Double {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        defer { close(fd) }
        let size = Int(lseek(fd, 0, SEEK_END))
        guard size > 0 else { return 0 }
        guard let address = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0), address != MAP_FAILED else {
            throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .ENOMEM)
        }
        defer { munmap(address, size) }
        let vector = try flags(address, size)
        return Double(vector.filter { $0 & 1 == 1 }.count) / Double(vector.count)
    }

    private static func flags(_ address: UnsafeMutableRawPointer, _ count: Int) throws -> [UInt8] {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        var vector = [UInt8](repeating: 0, count: (count + page - 1) / page)
        guard mincore(address, count, &vector) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EINVAL) }
        return vector
    }
}
