-- wrk script: POST /upload, one multipart/form-data file per request, each under a
-- name of its own (BENCH_PREFIX and a counter: no upload replaces another, which
-- would free inodes mid-run). BENCH_FILE is the content, BENCH_REQUESTS the number
-- of requests.
-- Run with one wrk thread (-t1): once all answers are in, it interrupts wrk, whose
-- main thread would otherwise sleep for the whole -d duration.
local boundary = "----upload-server-bench-boundary"
local handle = assert(io.open(os.getenv("BENCH_FILE"), "rb"))
local content = handle:read("*a")
handle:close()
local head = "--" .. boundary .. "\r\nContent-Disposition: form-data; name=\"file\"; filename=\""
  .. (os.getenv("BENCH_PREFIX") or "bench-")
local tail = ".bin\"\r\nContent-Type: application/octet-stream\r\n\r\n" .. content .. "\r\n--" .. boundary .. "--\r\n"
local headers = { ["Content-Type"] = "multipart/form-data; boundary=" .. boundary }

function init(args)
  sent = 0
  answered = 0
  quota = tonumber(os.getenv("BENCH_REQUESTS"))
end

function request()
  sent = sent + 1
  return wrk.format("POST", "/upload", headers, head .. sent .. tail)
end

function response(status, headers, body)
  answered = answered + 1
  if answered == quota then
    wrk.thread:stop()
    -- The shell's parent is wrk. In the background: system() ignores SIGINT in
    -- wrk until the shell has exited.
    os.execute("(sleep 0.05; kill -INT $PPID) &")
  end
end

function done(summary, latency, requests)
  io.write(string.format(
    "BENCH {\"requests\":%d,\"duration_us\":%d,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"non2xx\":%d,\"socket_errors\":%d}\n",
    summary.requests, summary.duration, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
