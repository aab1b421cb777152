# upload-server: a static binary in an otherwise empty image.
#
#   docker build -t upload-server .                     (BuildKit or, as in
#   DOCKER_BUILDKIT=0 docker build -t upload-server .    the scripts, the legacy builder)
#   docker run -p 9000:9000 -v uploads:/upload --read-only --cap-drop ALL upload-server
#
# scripts/image builds it with the version labels; scripts/test-container tests it.
# Kept to what both builders understand: no syntax line, no RUN --mount, no
# heredocs, no COPY --chmod/--link.

# The official Swift image (no registry here: scripts/local-swift-image builds a
# faithful local stand-in under the same tag). Named here and nowhere else:
# scripts/image reads it from this line, and Dependabot, which cannot follow
# an ARG in FROM, proposes the updates.
FROM swift:6.3-bookworm AS build
# The legacy builder keeps this stage's image (about 4 GB, untagged) after every
# build; the label lets `docker image prune --filter label=upload-server.stage=builder`
# remove exactly those (docs/releasing.md). The final image does not inherit it.
LABEL upload-server.stage=builder

# libmicrohttpd: our patched static build (no HTTPS), from Debian's source
# package and patches/libmicrohttpd, by the same script as every other build
# (scripts/libmicrohttpd; the version it builds and why: its header and
# patches/libmicrohttpd/README.md). Before the sources, so that editing Swift
# reuses this layer. LIBMICROHTTPD_PREFIX fixes the install folder (and so
# PKG_CONFIG_PATH); scripts/swift finds the build complete there and reuses it.
# --build-arg LIBMICROHTTPD_VERSION=... picks another Debian revision.
ARG LIBMICROHTTPD_VERSION=
ENV LIBMICROHTTPD_PREFIX=/opt/libmicrohttpd
WORKDIR /src
COPY scripts/libmicrohttpd ./scripts/
COPY patches/libmicrohttpd ./patches/libmicrohttpd/
RUN set -eux; \
    export DEBIAN_FRONTEND=noninteractive; \
    scripts/libmicrohttpd; \
    test -f "$LIBMICROHTTPD_PREFIX/lib/libmicrohttpd.a"; \
    rm -rf /var/lib/apt/lists/*
# SwiftPM finds the library through pkg-config (Sources/CMicroHTTPD); only the
# static archive is there, so the linker takes it.
ENV PKG_CONFIG_PATH=/opt/libmicrohttpd/lib/pkgconfig

# The manifest first, then the test target folders (.dockerignore keeps their
# Swift files out: the manifest only needs the folders to exist), then the
# sources: editing a Swift file reruns the Swift build only.
COPY Package.swift ./
COPY scripts/swift scripts/version ./scripts/
COPY Tests ./Tests
COPY Sources ./Sources
# The version the binary prints (scripts/version takes these: the build has no
# .git). scripts/image and docker-compose.build.yml pass both; a plain
# `docker build` says 0.0.0-dev.
ARG VERSION=0.0.0-dev
ARG REVISION=unknown
# --static-swift-stdlib with -static-executable: one binary that needs no
# shared library, not even glibc's (no NSS use: the server and its healthcheck
# take IP literals only). `--show-bin-path` keeps this free of the target
# triple, so the same file builds natively on arm64.
RUN set -eux; \
    VERSION="$VERSION" REVISION="$REVISION" scripts/swift build -c release --product upload-server \
        --static-swift-stdlib -Xswiftc -static-executable; \
    bin="$(swift build -c release --product upload-server --show-bin-path)"; \
    mkdir -p /out/upload; \
    cp "$bin/upload-server" /out/upload-server; \
    strip /out/upload-server; \
    /out/upload-server --version; \
    if ldd /out/upload-server >/dev/null 2>&1; then echo "not a static executable" >&2; exit 1; fi
# What went into the binary, as the release's SBOM (scripts/lib/sbom.py) and
# THIRD_PARTY_NOTICES.md name it: key=value lines, read from this builder.
RUN set -eu; \
    mkdir -p /out/licenses; \
    { \
        /out/upload-server --version | sed -n 's/^upload-server \([^ ]*\) (\([^)]*\))$/upload-server=\1\nrevision=\2/p'; \
        echo "architecture=$(dpkg --print-architecture)"; \
        echo "libmicrohttpd=$(pkg-config --modversion libmicrohttpd)"; \
        echo "libmicrohttpd-debian=$(scripts/libmicrohttpd --version)"; \
        echo "libmicrohttpd-patches=$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' patches/libmicrohttpd/series | awk '{ print $1 }' | paste -sd ' ')"; \
        echo "glibc=$(dpkg-query -W -f='${Version}' libc6-dev)"; \
        dpkg-query -W -f='${db:Status-Abbrev} ${Package}=${Version}\n' 'libstdc++-*-dev' 'libgcc-*-dev' \
            | awk '$1 == "ii" { print $2 }'; \
        echo "swift=$(swift --version 2>&1 | sed -n 's/.*Swift version \([^ ]*\).*/\1/p')"; \
    } > /out/licenses/components.txt; \
    cat /out/licenses/components.txt; \
    grep -q '^upload-server=' /out/licenses/components.txt

FROM scratch
COPY --from=build /out/upload-server /upload-server
# The licenses of everything in the binary (THIRD_PARTY_NOTICES.md says which
# applies to what) and the component versions the build recorded.
COPY LICENSE THIRD_PARTY_NOTICES.md licenses/ /licenses/
COPY --from=build /out/licenses/components.txt /licenses/
# /out/upload is empty: the copy creates /upload owned by the service's user,
# which a named volume mounted there inherits.
COPY --from=build --chown=10001:10001 /out/upload /upload
USER 10001:10001
WORKDIR /
ENV UPLOAD_DIR=/upload
VOLUME ["/upload"]
EXPOSE 9000
# Exec form: the image has no shell. The sub-command GETs
# http://127.0.0.1:$PORT/healthz and exits 0 on 200.
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/upload-server", "healthcheck"]
ENTRYPOINT ["/upload-server"]

# The same values as the build stage's.
ARG VERSION=0.0.0-dev
ARG REVISION=unknown
# The repository's URL (scripts/image derives it from the git remote "origin").
ARG SOURCE_URL=
LABEL org.opencontainers.image.title="upload-server" \
      org.opencontainers.image.description="File-upload HTTP service: POST /upload (multipart field file), GET /healthz; Swift on GNU libmicrohttpd, static binary on scratch" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="MIT AND LGPL-2.1-or-later AND GPL-3.0-or-later WITH GCC-exception-3.1 AND Apache-2.0 WITH Swift-exception" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
