"""The lab: Debian guests with their own kernels under QEMU (TCG), for real hibernation work.

- snapprof.lab.build: ensure_image(distro) -> Image (debootstrap, cached, recipe-hashed)
- snapprof.lab.qemu:  run_guest(distro, argv, output_dir, ...) -> GuestResult
- snapprof.lab.host:  cache folder, host tools, root and disk checks
"""
