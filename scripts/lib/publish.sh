# shellcheck shell=bash
# Image names, tags and the version label for a git ref: the one place that
# computes them, for the GitHub workflow and for scripts/rehearse-publish alike.
# Sourced after lib/docker-engine.sh (for die) by scripts/image. No Docker here.
#
#   image_name REGISTRY OWNER/REPO   -> registry/owner/repo, lower-cased
#   ref_version REF                  -> 1.2.3 | main | feature-x | pr-12
#   ref_tags REF SHA                 -> one tag a line, the commit's first
#
# Tags for a ref (SHA is the full 40-hex commit):
#   refs/heads/main        SHA, main, latest   (IMAGE_LATEST_BRANCH: main)
#   refs/heads/feature/x   SHA, feature-x
#   refs/tags/v1.2.3       SHA, 1.2.3, 1.2, 1
#   refs/tags/v1.2.3-rc.1  SHA, 1.2.3-rc.1     (pre-release or build metadata:
#                                               no 1.2, no 1, never latest)
#   refs/tags/other        SHA, other          (a "v" before a digit is dropped)
#   refs/pull/12/merge     SHA, pr-12          (built, never pushed)
# A branch or tag name becomes a Docker tag ([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}):
# every other character turns into "-", leading "." and "-" go, and it is cut
# to 120 characters so that the per-architecture tag "<version>-arm64" fits
# in 128.

publish_lower() { printf '%s' "$1" | tr '[:upper:]' '[:lower:]'; }

# REGISTRY/OWNER/REPO in lower case (GHCR, like every registry, refuses upper
# case in repository names; GitHub owners often have it). Fails on a name that
# stays invalid after lower-casing.
image_name() {
    local registry repository component
    registry=$(publish_lower "${1%/}")
    repository=$(publish_lower "${2:-}")
    [[ "$registry" =~ ^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?$ ]] \
        || die "name: '$1' is not a registry host[:port]"
    [[ "$repository" == */* ]] || die "name: the repository must be OWNER/REPO, not '${2:-}'"
    local -a components
    IFS=/ read -r -a components <<<"$repository"
    [[ "${repository: -1}" != / ]] || die "name: '${2:-}' ends with /"
    for component in "${components[@]}"; do
        [[ "$component" =~ ^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*$ ]] \
            || die "name: '$component' (from '${2:-}') is not a valid repository path component"
    done
    printf '%s/%s\n' "$registry" "$repository"
}

# A git branch or tag name as a Docker tag (see above).
tag_slug() {
    local slug
    slug=$(printf '%s' "$1" | LC_ALL=C sed -e 's/[^A-Za-z0-9_.-]/-/g' -e 's/^[.-]*//')
    slug=${slug:0:120}
    [[ -n "$slug" ]] || die "tags: '$1' leaves nothing usable as a Docker tag"
    printf '%s\n' "$slug"
}

# The org.opencontainers.image.version label for REF: the release number for a
# tag (v1.2.3 -> 1.2.3), the branch for a branch, pr-N for a pull request.
ref_version() {
    local ref=${1:?ref_version needs a ref} name number
    case "$ref" in
        refs/tags/?*)
            name=${ref#refs/tags/}
            if [[ "$name" =~ ^v[0-9] ]]; then name=${name#v}; fi
            tag_slug "$name"
            ;;
        refs/heads/?*) tag_slug "${ref#refs/heads/}" ;;
        refs/pull/*)
            number=${ref#refs/pull/}
            number=${number%%/*}
            [[ "$number" =~ ^[0-9]+$ ]] || die "tags: cannot read a pull request number from '$ref'"
            printf 'pr-%s\n' "$number"
            ;;
        *) die "tags: '$ref' is not refs/heads/..., refs/tags/... or refs/pull/..." ;;
    esac
}

ref_tags() {
    local ref=${1:?ref_tags needs a ref} sha version
    sha=$(publish_lower "${2:-}")
    [[ "$sha" =~ ^[0-9a-f]{40}$ ]] || die "tags: '${2:-}' is not a full 40-character commit sha"
    version=$(ref_version "$ref") || return 1
    printf '%s\n%s\n' "$sha" "$version"
    if [[ "$ref" == "refs/heads/${IMAGE_LATEST_BRANCH:-main}" ]]; then
        printf 'latest\n'
    elif [[ "$ref" =~ ^refs/tags/v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$ ]]; then
        printf '%s.%s\n%s\n' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" "${BASH_REMATCH[1]}"
    fi
}
