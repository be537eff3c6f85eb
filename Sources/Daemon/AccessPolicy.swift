import Config
import Foundation
import UnixSocket

#if canImport(Glibc)
import Glibc
#endif

/// Who may read and who may administer, from `access.*` in the
/// configuration, decided on the peer credentials the kernel reports
/// (SO_PEERCRED) — never on anything the client says. The daemon's own user
/// and root may do everything. Groups match the peer's primary group and,
/// read from /proc, its supplementary groups.
public struct AccessPolicy: Sendable, Equatable {
    var readUsers: Set<UInt32>
    var readGroups: Set<UInt32>
    var adminUsers: Set<UInt32>
    var adminGroups: Set<UInt32>
    var everyoneReads: Bool
    var owner: UInt32

    /// Names are looked up once, at start: an unknown name is an error then,
    /// not a silent denial later.
    public init(_ access: Configuration.Access, owner: UInt32 = getuid()) throws(DaemonError) {
        everyoneReads = access.readUsers.contains("*") || access.readGroups.contains("*")
        readUsers = try Self.ids(access.readUsers, key: "access.readUsers", lookup: Self.user)
        readGroups = try Self.ids(access.readGroups, key: "access.readGroups", lookup: Self.group)
        adminUsers = try Self.ids(access.adminUsers, key: "access.adminUsers", lookup: Self.user)
        adminGroups = try Self.ids(access.adminGroups, key: "access.adminGroups", lookup: Self.group)
        self.owner = owner
    }

    /// Whether `peer` may run a request (`admin`: preload, pin, unpin, evict).
    public func allows(_ peer: PeerCredentials, admin: Bool) -> Bool {
        if peer.uid == 0 || peer.uid == owner { return true }
        let groups = { Self.groups(of: peer) }
        if adminUsers.contains(peer.uid) || !adminGroups.isDisjoint(with: groups()) { return true }
        if admin { return false }
        return everyoneReads || readUsers.contains(peer.uid) || !readGroups.isDisjoint(with: groups())
    }

    /// What `peer` may do, decided once: a connection's credentials are
    /// fixed when it is made (SO_PEERCRED), and reading the peer's groups
    /// from /proc for every request cost tens of µs per read.
    public func grants(for peer: PeerCredentials) -> Grants {
        Grants(read: allows(peer, admin: false), admin: allows(peer, admin: true))
    }

    /// The operations one connection's peer may run.
    public struct Grants: Sendable, Equatable {
        public var read: Bool
        public var admin: Bool
        public func allows(admin needsAdmin: Bool) -> Bool { needsAdmin ? admin : read }
    }

    static func groups(of peer: PeerCredentials) -> Set<UInt32> {
        var groups: Set<UInt32> = [peer.gid]
        // "Groups:\t27 100 ..." — best effort: a peer that exited has no /proc entry.
        if let status = try? String(contentsOfFile: "/proc/\(peer.pid)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Groups:") })
        {
            for field in line.dropFirst("Groups:".count).split(whereSeparator: { $0 == " " || $0 == "\t" }) {
                if let gid = UInt32(field) { groups.insert(gid) }
            }
        }
        return groups
    }

    private static func ids(_ names: [String], key: String, lookup: (String) -> UInt32?) throws(DaemonError) -> Set<UInt32> {
        var ids = Set<UInt32>()
        for name in names where name != "*" {
            if let id = UInt32(name) ?? lookup(name) {
                ids.insert(id)
            } else {
                throw .invalidArgument("\(key): no such user or group \(String(reflecting: name))")
            }
        }
        return ids
    }

    private static func user(_ name: String) -> UInt32? { getpwnam(name).map { $0.pointee.pw_uid } }
    private static func group(_ name: String) -> UInt32? { getgrnam(name).map { $0.pointee.gr_gid } }
}
