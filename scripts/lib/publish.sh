# shellcheck shell=bash
# Image names, tags and versions for a git ref: the one place that computes
# them, for the GitHub workflow and for scripts/rehearse-publish alike.
# Sourced after lib/docker-engine.sh (for die) by scripts/image. No Docker here.
#
#   image_name REGISTRY OWNER/REPO   -> registry/owner/repo, lower-cased
#   ref_version REF                  -> 1.2.3 | main | feature-x | pr-12 (a Docker tag)
#   ref_build_version REF SHA        -> what the binary prints and the version
#                                       label say: 1.2.3, 1.2.3-rc.1, or
#                                       0.0.0-dev+<short sha> (as scripts/version)
#   ref_is_release REF               -> succeeds for refs/tags/vX.Y.Z (no pre-release)
#   ref_tags REF SHA [TAG...]        -> one tag a line; TAGs are the repository's
#                                       other tags (git tag), for the moving tags
#
# Tags for a ref (SHA is the full 40-hex commit):
#   refs/heads/main        SHA, main
#   refs/heads/feature/x   SHA, feature-x      (manual runs on a branch)
#   refs/tags/v1.2.3       1.2.3, 1.2, 1, latest
#   refs/tags/v0.4.1       0.4.1, 0.4, latest  (no "0": 0.x releases make no
#                                               promise across minor versions)
#   refs/tags/v1.2.3-rc.1  1.2.3-rc.1          (a pre-release: nothing moves)
#   refs/tags/other        other               (a "v" before a digit is dropped)
#   refs/pull/12/merge     SHA, pr-12          (built, never pushed)
# `latest` and the moving X and X.Y tags come from releases only, and only move
# forward: a release takes X.Y when no release tag among TAGs is a later X.Y.*,
# X when none is a later X.*, latest when none is later at all (so v1.1.5
# published after v1.2.0 gets 1.1.5 and 1.1, nothing else). The commit
# tag comes from branch builds only: a tag build of the same commit prints
# another version, so it is another image, and one commit tag must name one
# image.
# A branch or tag name becomes a Docker tag ([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}):
# every other character turns into "-", leading "." and "-" go, and it is cut
# to 120 characters so that the per-architecture tag "<version>-arm64" fits
# in 128.

# vX.Y.Z[-pre-release], as scripts/version reads tags: groups 1-3 are X, Y, Z,
# group 4 the pre-release with its "-".
release_tag_pattern='^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?$'

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

ref_is_release() {
    [[ "$1" == refs/tags/* && "${1#refs/tags/}" =~ $release_tag_pattern && -z "${BASH_REMATCH[4]}" ]]
}

ref_build_version() {
    local ref=${1:?ref_build_version needs a ref} sha
    sha=$(publish_lower "${2:-}")
    [[ "$sha" =~ ^[0-9a-f]{40}$ ]] || die "version: '${2:-}' is not a full 40-character commit sha"
    if [[ "$ref" == refs/tags/* && "${ref#refs/tags/}" =~ $release_tag_pattern ]]; then
        printf '%s\n' "${ref#refs/tags/v}"
    else
        printf '0.0.0-dev+%s\n' "${sha:0:7}"
    fi
}

# Succeeds when release tag $1 is the highest by `sort -V` of itself and those
# of the release tags $3... whose name starts with prefix $2 (v1.2., v1., v).
release_is_highest() {
    local tag=$1 prefix=$2 highest
    shift 2
    highest=$(printf '%s\n' "$tag" "$@" \
        | awk -v prefix="$prefix" 'index($0, prefix) == 1' \
        | while read -r other; do ref_is_release "refs/tags/$other" && printf '%s\n' "$other"; done \
        | sort -V | tail -n 1)
    [[ "$highest" == "$tag" ]]
}

ref_tags() {
    local ref=${1:?ref_tags needs a ref} sha version tag major minor
    sha=$(publish_lower "${2:-}")
    [[ "$sha" =~ ^[0-9a-f]{40}$ ]] || die "tags: '${2:-}' is not a full 40-character commit sha"
    version=$(ref_version "$ref") || return 1
    case "$ref" in
        refs/heads/* | refs/pull/*) printf '%s\n' "$sha" ;;
    esac
    printf '%s\n' "$version"
    if ref_is_release "$ref"; then
        tag=${ref#refs/tags/}
        [[ "$tag" =~ $release_tag_pattern ]]
        major=${BASH_REMATCH[1]}
        minor=${BASH_REMATCH[2]}
        shift 2
        if release_is_highest "$tag" "v$major.$minor." "$@"; then printf '%s.%s\n' "$major" "$minor"; fi
        if [[ "$major" != 0 ]] && release_is_highest "$tag" "v$major." "$@"; then printf '%s\n' "$major"; fi
        if release_is_highest "$tag" v "$@"; then printf 'latest\n'; fi
    fi
}
