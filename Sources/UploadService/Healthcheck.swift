import Platform

/// `upload-server healthcheck`: the image has no curl or shell.
public enum Healthcheck {
    public static func run(url text: String, timeoutSeconds: Int) -> Int32 {
        guard let url = HealthcheckURL(text), let address = SocketAddress(host: url.host, port: url.port) else {
            ProcessEnvironment.writeLine("healthcheck: invalid URL \(text)", toStandardError: true)
            return 1
        }
        do {
            let status = try HTTPProbe.get(address, path: url.path, timeoutSeconds: timeoutSeconds)
            ProcessEnvironment.writeLine("healthcheck: \(text) answered \(status)")
            return status == 200 ? 0 : 1
        } catch {
            ProcessEnvironment.writeLine("healthcheck: \(text): \(error)", toStandardError: true)
            return 1
        }
    }
}
