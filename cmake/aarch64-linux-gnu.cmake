# Cross build for 64-bit ARM Linux with Debian's GNU cross toolchain (g++-aarch64-linux-gnu):
#     cmake -S . -B build-aarch64 -G Ninja -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
#           -DBITNET_BUILD_TESTS=ON -DBITNET_BUILD_PYTHON=OFF
# The binaries run under qemu-user: qemu-aarch64-static -L /usr/aarch64-linux-gnu <binary>
# (docs/kernels.md, "ARM"). Override BITNET_CROSS_PREFIX / BITNET_CROSS_ROOT for other toolchains.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(BITNET_CROSS_PREFIX "aarch64-linux-gnu-" CACHE STRING "Prefix of the cross compilers")
set(BITNET_CROSS_ROOT "/usr/aarch64-linux-gnu" CACHE PATH "Sysroot of the target's libraries")

set(CMAKE_C_COMPILER "${BITNET_CROSS_PREFIX}gcc")
set(CMAKE_CXX_COMPILER "${BITNET_CROSS_PREFIX}g++")

# Libraries and headers come from the target's root only; programs (ninja, python) from the host.
set(CMAKE_FIND_ROOT_PATH "${BITNET_CROSS_ROOT}")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# Tests run the binaries through qemu-user (ctest, try_run).
find_program(BITNET_QEMU_AARCH64 NAMES qemu-aarch64-static qemu-aarch64)
if(BITNET_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR "${BITNET_QEMU_AARCH64};-L;${BITNET_CROSS_ROOT}")
endif()
