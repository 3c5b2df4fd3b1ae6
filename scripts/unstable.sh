# Shared by get-python and get-gdb: packages from Debian's unstable suite,
# fetched with apt-get against a private sources list, lists directory and
# status file under the user's cache (never the system's), unpacked with
# dpkg -x into a private root, and a program in that root pointed at the
# root's own loader and C library with patchelf (unstable's programs need a
# newer glibc than this machine's). Source it; do not run it.

UNSTABLE_CACHE="${HEAPSITE_PYTHON_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/heapsite/python}"
unstable_apt_dir="$UNSTABLE_CACHE/apt"
mkdir -p "$unstable_apt_dir/lists/partial" "$unstable_apt_dir/archives/partial"

# The archive's address is the one the system's own sources already use (the
# first deb822 or one-line source of the main archive), with the suite changed.
unstable_archive_uri() {
    local uri
    uri=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n 1 | awk '{print $2}')
    [ -n "$uri" ] || uri=$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | grep -v security | head -n 1 | awk '{print $2}')
    [ -n "$uri" ] || { echo "no Debian archive in the system's apt sources" >&2; return 1; }
    echo "$uri"
}
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $(unstable_archive_uri) unstable main" > "$unstable_apt_dir/sources.list"
[ -f "$unstable_apt_dir/status" ] || : > "$unstable_apt_dir/status"
unstable_apt_opts=(
    -o "Dir::Etc::SourceList=$unstable_apt_dir/sources.list"
    -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::State::Lists=$unstable_apt_dir/lists"
    -o "Dir::State::status=$unstable_apt_dir/status"
    -o "Dir::Cache=$unstable_apt_dir"
    -o "Dir::Cache::archives=$unstable_apt_dir/archives"
    -o "APT::Architecture=$(dpkg --print-architecture)"
    -o "Debug::NoLocking=1"
    -o "APT::Sandbox::User=root"
)

# unstable_lists: the package lists, refreshed when older than a day.
unstable_lists() {
    if [ -z "$(find "$unstable_apt_dir/lists" -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -n 1)" ]; then
        echo "reading Debian unstable's package lists" >&2
        apt-get "${unstable_apt_opts[@]}" -qq update >&2
    fi
}

# unstable_available PACKAGE...: those of them the suite has, one a line.
unstable_available() {
    local p
    for p in "$@"; do
        if apt-cache "${unstable_apt_opts[@]}" show "$p" >/dev/null 2>&1; then echo "$p"; fi
    done
}

# unstable_unpack DEBS_DIR ROOT PACKAGE...: downloads the packages into
# DEBS_DIR and unpacks every .deb there into ROOT (made afresh).
unstable_unpack() {
    local debs="$1" root="$2" deb; shift 2
    mkdir -p "$debs"
    (cd "$debs" && apt-get "${unstable_apt_opts[@]}" -qq download "$@" >&2)
    rm -rf "$root"
    mkdir -p "$root"
    for deb in "$debs"/*.deb; do dpkg -x "$deb" "$root"; done
}

# unstable_relink ROOT PROGRAM: PROGRAM runs on ROOT's loader and libraries.
# DT_RPATH, not RUNPATH: it also applies to the libraries and modules the
# program loads (an interpreter's lib-dynload needs this root's libssl).
unstable_relink() {
    local root="$1" program="$2" libdir loader
    command -v patchelf >/dev/null || { echo "installing patchelf" >&2; apt-get install -y -qq patchelf >&2; }
    libdir="$root/usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)"
    loader="$(ls "$libdir"/ld-linux*.so.* 2>/dev/null | head -n 1)"
    [ -x "$loader" ] || { echo "no loader in the unpacked libc6 ($libdir)" >&2; return 1; }
    patchelf --set-interpreter "$loader" --force-rpath --set-rpath "$libdir" "$program"
}
