"""SPDX 2.3 SBOM (JSON) of the released binaries and what is linked into them.

    python3 scripts/lib/sbom.py --version 1.2.3 --revision SHA --source URL \
        --image NAME@sha256:... \
        --binary DIR/upload-server-linux-amd64 COMPONENTS_AMD64 \
        --binary DIR/upload-server-linux-arm64 COMPONENTS_ARM64 > upload-server.spdx.json

COMPONENTS is the /licenses/components.txt of the image the binary came from:
key=value lines the Dockerfile's build stage writes from the builder itself
(upload-server, revision, architecture, libmicrohttpd, libmicrohttpd-debian,
libmicrohttpd-patches, glibc, libstdc++-N-dev, libgcc-N-dev, swift). The
licenses are the ones THIRD_PARTY_NOTICES.md gives; a component missing from
COMPONENTS is an error, not a guess. Python 3 standard library only.
"""

import argparse
import datetime
import hashlib
import json
import re
import sys
import uuid

DEBIAN = "Organization: Debian"
SWIFT = "Organization: Swift.org"


def read_components(path):
    values = {}
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            line = line.strip()
            if line and "=" in line:
                key, value = line.split("=", 1)
                values[key] = value
    return values


def need(values, key, path):
    if not values.get(key):
        sys.exit(f"sbom: {path} has no {key}=")
    return values[key]


def versioned(values, prefix, path):
    """The (package, version) of the one key like libstdc++-12-dev."""
    found = [(k, v) for k, v in values.items() if re.fullmatch(prefix + r"-[0-9]+-dev", k)]
    if len(found) != 1:
        sys.exit(f"sbom: {path} must name exactly one {prefix}-N-dev, not {found}")
    return found[0]


def spdx_id(*parts):
    return "SPDXRef-" + re.sub(r"[^A-Za-z0-9.-]", "-", "-".join(parts))


def deb_purl(source_package, version):
    return f"pkg:deb/debian/{source_package}@{version}?arch=source&distro=debian-12"


def components_of(values, path):
    """SPDX packages for what the binary links, from one components file."""
    mhd_debian = need(values, "libmicrohttpd-debian", path)
    mhd_upstream = need(values, "libmicrohttpd", path)
    patches = values.get("libmicrohttpd-patches", "").split()
    glibc = need(values, "glibc", path)
    stdcxx_package, stdcxx = versioned(values, "libstdc\\+\\+", path)
    libgcc_package, libgcc = versioned(values, "libgcc", path)
    if stdcxx != libgcc:
        sys.exit(f"sbom: {stdcxx_package} {stdcxx} and {libgcc_package} {libgcc} come from different GCC builds")
    gcc_source = "gcc-" + re.search(r"-([0-9]+)-dev$", stdcxx_package).group(1)
    swift = need(values, "swift", path)
    swift_tag = f"swift-{swift}-RELEASE"
    patch_text = ", ".join(patches) if patches else "none"
    return [
        {
            "name": "libmicrohttpd",
            "versionInfo": mhd_debian,
            "supplier": DEBIAN,
            "downloadLocation": f"https://snapshot.debian.org/package/libmicrohttpd/{mhd_debian}/",
            "licenseDeclared": "LGPL-2.1-or-later",
            "comment": f"GNU libmicrohttpd {mhd_upstream}, Debian source package {mhd_debian}, "
                       f"built static without HTTPS with the upload-server patch series "
                       f"(patches/libmicrohttpd): {patch_text}. src/microhttpd/md5.c is public domain.",
            "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                              "referenceLocator": deb_purl("libmicrohttpd", mhd_debian)}],
        },
        {
            "name": "glibc",
            "versionInfo": glibc,
            "supplier": DEBIAN,
            "downloadLocation": f"https://snapshot.debian.org/package/glibc/{glibc}/",
            "licenseDeclared": "LGPL-2.1-or-later",
            "comment": "libc.a, libm.a, libpthread.a, libdl.a and the start-up files of libc6-dev; "
                       "some parts are under permissive licenses, see /licenses/glibc.copyright.",
            "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                              "referenceLocator": deb_purl("glibc", glibc)}],
        },
        {
            "name": gcc_source,
            "versionInfo": stdcxx,
            "supplier": DEBIAN,
            "downloadLocation": f"https://snapshot.debian.org/package/{gcc_source}/{stdcxx}/",
            "licenseDeclared": "GPL-3.0-or-later WITH GCC-exception-3.1",
            "comment": f"libstdc++.a ({stdcxx_package}), libgcc.a and libgcc_eh.a ({libgcc_package}).",
            "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                              "referenceLocator": deb_purl(gcc_source, stdcxx)}],
        },
        {
            "name": "swift",
            "versionInfo": swift,
            "supplier": SWIFT,
            "downloadLocation": f"git+https://github.com/swiftlang/swift@{swift_tag}",
            "licenseDeclared": "Apache-2.0 WITH Swift-exception",
            "comment": "Swift runtime and standard library (swiftCore, _Concurrency, Synchronization, "
                       "Glibc overlay, _StringProcessing), linked with --static-swift-stdlib; no Foundation.",
            "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                              "referenceLocator": f"pkg:github/swiftlang/swift@{swift_tag}"}],
        },
        {
            "name": "swift-corelibs-libdispatch",
            "versionInfo": swift,
            "supplier": SWIFT,
            "downloadLocation": f"git+https://github.com/swiftlang/swift-corelibs-libdispatch@{swift_tag}",
            "licenseDeclared": "Apache-2.0 WITH Swift-exception",
            "comment": "libdispatch.a and libBlocksRuntime.a, which -static-executable links.",
            "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                              "referenceLocator": f"pkg:github/swiftlang/swift-corelibs-libdispatch@{swift_tag}"}],
        },
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True)
    parser.add_argument("--revision", required=True)
    parser.add_argument("--source", required=True, help="https URL of the repository")
    parser.add_argument("--image", required=True, help="NAME@sha256:... of the manifest list")
    parser.add_argument("--binary", nargs=2, action="append", required=True, metavar=("FILE", "COMPONENTS"))
    args = parser.parse_args()

    packages, relationships, seen = [], [], {}
    for binary, components in args.binary:
        values = read_components(components)
        architecture = need(values, "architecture", components)
        for key, want in [("upload-server", args.version), ("revision", args.revision)]:
            if values.get(key) != want:
                sys.exit(f"sbom: {components} says {key}={values.get(key)}, the release is {want}")
        with open(binary, "rb") as data:
            sha256 = hashlib.sha256(data.read()).hexdigest()
        file_name = binary.rsplit("/", 1)[-1]
        binary_id = spdx_id("upload-server", architecture)
        packages.append({
            "SPDXID": binary_id,
            "name": "upload-server",
            "versionInfo": args.version,
            "packageFileName": file_name,
            "supplier": "Organization: the upload-server authors",
            "downloadLocation": f"{args.source}/releases/download/v{args.version}/{file_name}",
            "sourceInfo": f"built from {args.source} at {args.revision}; the same bytes as /upload-server "
                          f"in the linux/{architecture} image of {args.image}",
            "checksums": [{"algorithm": "SHA256", "checksumValue": sha256}],
            "licenseDeclared": "MIT",
            "licenseConcluded": "MIT AND LGPL-2.1-or-later AND GPL-3.0-or-later WITH GCC-exception-3.1 "
                                "AND Apache-2.0 WITH Swift-exception",
            "copyrightText": "Copyright (c) the upload-server authors",
            "primaryPackagePurpose": "APPLICATION",
            "filesAnalyzed": False,
            "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                              "referenceLocator": f"pkg:generic/upload-server@{args.version}"
                                                  f"?vcs_url=git%2B{args.source}%40{args.revision}"}],
        })
        relationships.append({"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
                              "relatedSpdxElement": binary_id})
        for component in components_of(values, components):
            key = (component["name"], component["versionInfo"])
            if key not in seen:
                seen[key] = spdx_id(component["name"], component["versionInfo"])
                packages.append({"SPDXID": seen[key], **component, "licenseConcluded": component["licenseDeclared"],
                                 "copyrightText": "NOASSERTION", "filesAnalyzed": False,
                                 "primaryPackagePurpose": "LIBRARY"})
            relationships.append({"spdxElementId": binary_id, "relationshipType": "STATIC_LINK",
                                  "relatedSpdxElement": seen[key]})

    created = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    document = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"upload-server-{args.version}",
        "documentNamespace": f"{args.source}/releases/v{args.version}/spdx/{uuid.uuid4()}",
        "creationInfo": {"created": created, "creators": ["Tool: upload-server-scripts-lib-sbom.py"]},
        "packages": packages,
        "relationships": relationships,
    }
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
