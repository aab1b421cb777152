/// A filesystem type as statfs(2) reports it. Network filesystems are where
/// several hosts share one directory, and where the docs' mount and volume
/// options matter: the `started` line says which kind the directory is on.
public struct Filesystem: Sendable, Equatable, CustomStringConvertible {
    public let type: UInt64

    public init(type: UInt64) { self.type = type }

    private static let names: [UInt64: (name: String, network: Bool)] = [
        0xEF53: ("ext4", false), 0x5846_5342: ("xfs", false), 0x9123_683E: ("btrfs", false),
        0x0102_1994: ("tmpfs", false), 0x794C_7630: ("overlayfs", false), 0x2FC1_2FC1: ("zfs", false),
        0x6573_5546: ("fuse", true), 0x6969: ("nfs", true), 0x00C3_6400: ("ceph", true),
        0xFF53_4D42: ("cifs", true), 0xFE53_4D42: ("smb2", true), 0x0BD0_0BD0: ("lustre", true),
        0x1974_0301: ("gpfs", true),
    ]

    public var description: String { Self.names[type]?.name ?? "0x" + String(type, radix: 16) }

    /// A filesystem other hosts may share (FUSE: GlusterFS, CephFS's FUSE client, sshfs...).
    public var isNetwork: Bool { Self.names[type]?.network ?? false }
}
