import Glibc
import Platform
import UploadService

var environment: [String: String] = [:]
for name in CommandLineParser.environmentNames {
    environment[name] = ProcessEnvironment.environment(name)
}

do {
    switch try CommandLineParser.parse(Array(CommandLine.arguments.dropFirst()), environment: environment,
                                       processors: ProcessEnvironment.onlineProcessors) {
    case .help(let text):
        ProcessEnvironment.writeLine(text)
    case .version:
        ProcessEnvironment.writeLine("upload-server \(CommandLineParser.version)")
    case .healthcheck(let url, let timeout):
        exit(Healthcheck.run(url: url, timeoutSeconds: timeout))
    case .serve(let config):
        exit(Server.run(config))
    }
} catch {
    ProcessEnvironment.writeLine("upload-server: \(error)", toStandardError: true)
    exit(2)
}
