# Debian packages with CPack, one per install component:
#   libals0     runtime: libals.so.MAJOR (+ the versioned file)
#   libals-dev  headers, libals.so, libals.a, CMake package, als.pc
#
# Build them with the prefix Debian uses, so GNUInstallDirs picks the
# multiarch libdir (/usr/lib/<triplet>) where ck itself lives:
#   cmake -S . -B /tmp/b-deb --preset release -DCMAKE_INSTALL_PREFIX=/usr
#   cmake --build /tmp/b-deb -j2 && (cd /tmp/b-deb && cpack)
#   sudo apt install ./libals0_*.deb ./libals-dev_*.deb

set(CPACK_GENERATOR "DEB")
set(CPACK_PACKAGE_NAME "libals")
set(CPACK_PACKAGE_VENDOR "libals developers")
set(CPACK_PACKAGE_CONTACT "libals developers")
set(CPACK_PACKAGE_VERSION "${PROJECT_VERSION}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${PROJECT_DESCRIPTION}")
# The packages install under /usr whatever the configured prefix was.
set(CPACK_PACKAGING_INSTALL_PREFIX "/usr")
if(NOT CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  message(STATUS "cpack: packages will use /usr/${CMAKE_INSTALL_LIBDIR}; "
                 "configure with -DCMAKE_INSTALL_PREFIX=/usr for Debian's "
                 "multiarch libdir")
endif()
# Only what install.cmake puts in these components; anything installed
# without a component (e.g. by a future subdirectory) stays out.
set(CPACK_COMPONENTS_ALL runtime dev)

set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)   # <name>_<version>_<arch>.deb
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "libals developers")
set(CPACK_DEBIAN_PACKAGE_PRIORITY "optional")

# CPackDeb makes CPACK_PACKAGE_DESCRIPTION_SUMMARY the synopsis line and
# these texts the extended description, which it indents itself (one space
# per line, " ." for an empty line): so they are written unindented here.
# (Pre-indented text ends up indented twice, i.e. shown verbatim, because
# CPackDeb strips the last line's indentation before checking the format.)
set(_als_long_description
"libals gives C threads what Node.js's AsyncLocalStorage gives JavaScript:
a value bound for the duration of a call is visible to everything that call
does, including work it hands to other threads (snapshots, bound functions,
async resources, threads and a worker pool), and concurrent work never sees
another's values.")

# runtime -> libals0
set(CPACK_COMPONENT_RUNTIME_DISPLAY_NAME "libals shared library")
set(CPACK_DEBIAN_RUNTIME_PACKAGE_NAME "libals${PROJECT_VERSION_MAJOR}")
set(CPACK_DEBIAN_RUNTIME_PACKAGE_SECTION "libs")
set(CPACK_DEBIAN_RUNTIME_DESCRIPTION
"${_als_long_description}

This package contains the shared library.")
# CPackDeb finds the shared objects to scan with file(1); without it, both
# features below make cpack stop with an error, so they are only enabled
# where they can work.
find_program(ALS_FILE_PROGRAM file)
find_program(ALS_DPKG_SHLIBDEPS dpkg-shlibdeps)
mark_as_advanced(ALS_FILE_PROGRAM ALS_DPKG_SHLIBDEPS)
if(ALS_FILE_PROGRAM)
  # A shlibs file, so that packages built against libals depend on
  # libals0 (>= the version they were built with). CPack has no
  # per-component switch for it; only libals0 holds a real shared object.
  set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
  set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS_POLICY ">=")
endif()
if(ALS_FILE_PROGRAM AND ALS_DPKG_SHLIBDEPS)
  # dpkg-shlibdeps turns libals.so's DT_NEEDED into exact dependencies: today
  # only libc6, since libals uses nothing but ck's inline functions (no
  # libck.so.0 at run time, and no longer linked: see lib/CMakeLists.txt).
  set(CPACK_DEBIAN_RUNTIME_PACKAGE_SHLIBDEPS ON)
else()
  # Not a Debian build host: name the dependency by hand.
  set(CPACK_DEBIAN_RUNTIME_PACKAGE_DEPENDS "libc6 (>= 2.34)")
endif()

# dev -> libals-dev
set(CPACK_COMPONENT_DEV_DISPLAY_NAME "libals development files")
set(CPACK_DEBIAN_DEV_PACKAGE_NAME "libals-dev")
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION "libdevel")
set(CPACK_DEBIAN_DEV_DESCRIPTION
"${_als_long_description}

This package contains the headers, the static library, the CMake package
(find_package(als CONFIG)) and the pkg-config file (als.pc).")
# The headers and the .so link only make sense with the exact same build of
# the library. No libck-dev: neither the CMake package nor als.pc needs ck.
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS
    "libals${PROJECT_VERSION_MAJOR} (= ${PROJECT_VERSION})")
unset(_als_long_description)

include(CPack)
