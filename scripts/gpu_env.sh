# Sourced on the GPU machine from the repository's root, with the parts of scripts/gpu_payload.sh that the
# call carries:   . scripts/gpu_env.sh && sh kernels/gpu_check.sh "$OUT/gpu-check" PHASE...
# Unpacks the Debian packages (/opt/i3deps), the Python packages (/tmp/i3rt-site, before the stand-ins, so
# that a carried SimpleITK wins), the volumes where the scripts read them, and the weights into weights/.
# What it installs outside the repository stays for the next call while the machine is warm, so a call
# that carries only .gpu/b (no room for the packages beside SimpleITK) still finds them.
[ -d .gpu/debs ] && . .gpu/debs/env.sh .gpu/debs
for part in .gpu/a .gpu/b; do
    [ -d "$part" ] || continue
    ls "$part"/wheels/*.whl > /dev/null 2>&1 && python3 -m pip install -q --no-index --no-deps --no-compile \
        --no-cache-dir --upgrade --target /tmp/i3rt-site "$part"/wheels/*.whl
    [ -f "$part/site.tar.xz" ] && mkdir -p /tmp/i3rt-site && tar -C /tmp/i3rt-site -xJf "$part/site.tar.xz"
    [ -d "$part/stub" ] && mkdir -p /tmp/i3rt-stub && cp -r "$part"/stub/. /tmp/i3rt-stub/
    if [ -d "$part/data" ]; then
        mkdir -p /usr/share/mricron/templates /usr/share/doc/invesalius-examples/examples
        cp "$part"/data/*.nii.gz /usr/share/mricron/templates/
        cp "$part"/data/Cranium.inv3 /usr/share/doc/invesalius-examples/examples/
    fi
    [ -d "$part/weights" ] && mkdir -p weights && cp -r "$part"/weights/. weights/
done
# The packages' paths (again on a warm machine). pkg-config's answers are Debian's paths (/usr/include/...):
# the sysroot moves them into the prefix, or CMake rejects the imported targets' missing folders.
_ma=/opt/i3deps/usr/lib/x86_64-linux-gnu
export DEPS_PREFIX=/opt/i3deps PKG_CONFIG_SYSROOT_DIR=/opt/i3deps CMAKE_PREFIX_PATH=/opt/i3deps/usr \
    CPATH=/opt/i3deps/usr/include:/opt/i3deps/usr/include/nifti:/opt/i3deps/usr/include/x86_64-linux-gnu \
    LIBRARY_PATH="$_ma:/opt/i3deps/usr/lib" LD_LIBRARY_PATH="$_ma:/opt/i3deps/usr/lib" \
    PKG_CONFIG_PATH="$_ma/pkgconfig:/opt/i3deps/usr/share/pkgconfig"
export PYTHONPATH="/tmp/i3rt-site:/tmp/i3rt-stub${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
echo "gpu_env: Debian packages in /opt/i3deps, Python packages in /tmp/i3rt-site, stand-ins in /tmp/i3rt-stub"
