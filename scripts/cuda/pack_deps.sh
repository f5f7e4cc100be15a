#!/bin/bash
# Packs this Debian machine's non-LibTorch build dependencies (headers, CMake/pkg-config files, the
# shared-library closure) into build-cuda/sysroot.tar.xz for a build against the GPU machine's CUDA LibTorch.
# OpenCV's imgcodecs pulls in GDAL and GDCM (~200 MB); those become stub libraries with the
# same sonames whose functions abort: albef never decodes those formats.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)/build-cuda; mkdir -p "$here"
root=$here/sysroot; rm -rf "$root"; mkdir -p "$root"
A=x86_64-linux-gnu
for p in libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libfaiss-dev libutf8proc-dev libcpp-httplib-dev libgloo-dev \
         zlib1g-dev libopencv-core-dev libopencv-imgproc-dev libopencv-imgcodecs-dev pkgconf pkgconf-bin libpkgconf3 libbrotli-dev libssl-dev; do
  dpkg -L $p | grep -v '/share/doc\|/share/man\|/share/lintian\|/aclocal' | while read -r f; do
    if [ -L "$f" ] || [ -f "$f" ]; then mkdir -p "$root$(dirname "$f")"; cp -a "$f" "$root$f"; fi
  done
done
libdir=$root/usr/lib/$A; mkdir -p "$libdir"
stubs="libgdal.so.32 libgdcmMSFF.so.3.0 libgdcmDSED.so.3.0 libGLX.so.0"
/usr/bin/python3 - "$libdir" $stubs <<'PY'
import os, re, subprocess, sys, shutil
libdir, stubs = sys.argv[1], set(sys.argv[2:])
L = "/lib/x86_64-linux-gnu"
system = {"libc.so.6","libm.so.6","libpthread.so.0","libdl.so.2","librt.so.1","libstdc++.so.6","libgcc_s.so.1",
          "ld-linux-x86-64.so.2","libgomp.so.1","libblas.so.3","liblapack.so.3"}
def needed(p): return re.findall(r"NEEDED.*\[(.*)\]", subprocess.run(["readelf","-d",p],capture_output=True,text=True).stdout)
roots = ["libopencv_core.so.406","libopencv_imgproc.so.406","libopencv_imgcodecs.so.406","libyaml-cpp.so.0.7",
         "libutf8proc.so.2","libcpp-httplib.so.0.11","libz.so.1","libpkgconf.so.3"]
seen, todo = {}, list(roots)
while todo:
    n = todo.pop()
    if n in seen or n in system or n in stubs: continue
    p = os.path.realpath(os.path.join(L, n)); seen[n] = p; todo += needed(p)
for n, p in seen.items(): shutil.copy(p, os.path.join(libdir, n))
# Reference BLAS and LAPACK (faiss's link interface); OpenBLAS is 36 MB.
for n, d in (("libblas.so.3","blas"),("liblapack.so.3","lapack")):
    p = os.path.realpath(f"/usr/lib/x86_64-linux-gnu/{d}/{n}"); shutil.copy(p, os.path.join(libdir, n))
    for m in needed(p):
        if m not in system and m not in seen and m not in ("libblas.so.3",):
            seen[m] = os.path.realpath(os.path.join(L, m)); shutil.copy(seen[m], os.path.join(libdir, m))
for n in ("libblas","liblapack"):
    dev = os.path.join(libdir, n + ".so")
    if os.path.lexists(dev): os.remove(dev)
    os.symlink(n + ".so.3", dev)
# OpenCV registers GDAL's drivers while constructing its decoder list: that call may do nothing.
noop = {"GDALAllRegister"}
for s in stubs:
    names = [l.split()[0] for l in subprocess.run(["nm","-D","--defined-only","--format=posix",os.path.join(L,s)],
             capture_output=True,text=True).stdout.splitlines() if l.split()[1] not in ("A",)]
    def body(n): return "" if n in noop else f'fputs("stub called: {n}\\n", stderr); abort();'
    src = "#include <stdio.h>\n#include <stdlib.h>\n" + "".join(
        f'void s{i}(void) __asm__("{n}");\nvoid s{i}(void) {{ {body(n)} }}\n' for i, n in enumerate(names))
    c = f"/tmp/stub_{s}.c"; open(c, "w").write(src)
    subprocess.run(["gcc","-shared","-fPIC","-O0","-o",os.path.join(libdir,s),f"-Wl,-soname,{s}",c], check=True)
print("libraries:", len(seen), "stubs:", len(stubs))
PY
# Only shared libraries are linked (faiss has none); dev symlinks point at the sonames beside them.
find "$libdir" -name '*.a' ! -name libfaiss.a -delete
for l in "$libdir"/*.so; do
  [ -L "$l" ] || continue
  soname=$(basename "$(ls "$libdir"/"$(basename "$l")".[0-9]* | head -1)")
  ln -sfn "$soname" "$l"
done
find "$libdir" -xtype l -print | while read -r l; do echo "dangling: $l"; exit 1; done
tar -C "$here" -cJf "$here/sysroot.tar.xz" sysroot
rm -rf "$root"; du -sh "$here/sysroot.tar.xz"
