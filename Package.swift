// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "upload-server",
    products: [
        .executable(name: "upload-server", targets: ["upload-server"])
    ],
    targets: [
        // libmicrohttpd through pkg-config: our patched static build
        // (scripts/libmicrohttpd, which scripts/swift puts on PKG_CONFIG_PATH), or
        // Debian's libmicrohttpd-dev for a quick try.
        .systemLibrary(
            name: "CMicroHTTPD",
            pkgConfig: "libmicrohttpd",
            providers: [.apt(["libmicrohttpd-dev"])]
        ),
        // The glibc declarations Swift lacks, and the build's version.
        .target(name: "CPlatform"),
        // Errors and errno, the directory and staged files, process facilities,
        // socket addresses and the healthcheck's client.
        .target(name: "Platform", dependencies: ["CPlatform"]),
        // The libmicrohttpd wrapper: daemon, callbacks, post-processor, the
        // request/response contract. With Platform, the only code that touches pointers.
        .target(name: "MicroHTTPD", dependencies: ["CMicroHTTPD", "Platform"]),
        // Upload policy in plain Swift: configuration, names, limits, conflicts, responses.
        .target(name: "UploadService", dependencies: ["MicroHTTPD", "Platform"]),
        .executableTarget(name: "upload-server", dependencies: ["UploadService", "Platform"]),
        .testTarget(name: "PlatformTests", dependencies: ["Platform"]),
        .testTarget(name: "UploadServiceTests", dependencies: ["UploadService", "Platform"]),
        // Starts the real binary and talks to it over sockets.
        .testTarget(name: "ServerTests", dependencies: ["upload-server"]),
    ],
    swiftLanguageModes: [.v6]
)
