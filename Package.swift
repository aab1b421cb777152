// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "upload-server",
    products: [
        .executable(name: "upload-server", targets: ["upload-server"])
    ],
    targets: [
        // libmicrohttpd, found through pkg-config (Debian: libmicrohttpd-dev).
        .systemLibrary(
            name: "CMicroHTTPD",
            pkgConfig: "libmicrohttpd",
            providers: [.apt(["libmicrohttpd-dev"])]
        ),
        // The only module that touches C pointers and callbacks: the daemon, the
        // post-processor, responses, file descriptors, signals and sockets.
        .target(name: "MicroHTTPD", dependencies: ["CMicroHTTPD"]),
        // Upload policy in plain Swift: configuration, names, limits, conflicts, responses.
        .target(name: "UploadService", dependencies: ["MicroHTTPD"]),
        .executableTarget(name: "upload-server", dependencies: ["UploadService"]),
        .testTarget(name: "UploadServiceTests", dependencies: ["UploadService"]),
        // Starts the real binary and talks to it over sockets.
        .testTarget(name: "ServerTests", dependencies: ["upload-server"]),
    ],
    swiftLanguageModes: [.v6]
)
