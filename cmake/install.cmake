# Install rules, the CMake package, pkg-config file, API docs and CPack.
# Included from the top-level CMakeLists.txt after lib/ has defined the
# targets `als` (shared) and `als_static`.
#
# Components (they become the Debian packages, see cmake/cpack.cmake):
#   runtime  libals.so.MAJOR and libals.so.VERSION          -> libals0
#   dev      headers, libals.so namelink, libals.a, CMake
#            package and als.pc                             -> libals-dev

# Default ON even as a subproject: a parent that exports its own targets
# linking als::als needs als in an export set, or its install(EXPORT) fails.
option(ALS_INSTALL "Generate the install rules and the CMake package" ON)

if(ALS_INSTALL)
  include(GNUInstallDirs)
  include(CMakePackageConfigHelpers)

  set(ALS_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/als" CACHE STRING
      "Where the CMake package (alsConfig.cmake) is installed, relative to the prefix")
  mark_as_advanced(ALS_INSTALL_CMAKEDIR)

  # The shared library's real file and SONAME link are all a program needs at
  # run time; the bare libals.so link only serves the linker, so it goes with
  # the headers.
  # lib/ hard-codes $<INSTALL_INTERFACE:include>; if CMAKE_INSTALL_INCLUDEDIR
  # was changed, the exported targets need the real directory too.
  set(_als_includes "")
  if(NOT CMAKE_INSTALL_INCLUDEDIR STREQUAL "include")
    set(_als_includes INCLUDES DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
  endif()
  install(TARGETS als EXPORT alsTargets
    LIBRARY DESTINATION "${CMAKE_INSTALL_LIBDIR}"
      COMPONENT runtime
      NAMELINK_COMPONENT dev
    RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}" COMPONENT runtime
    ${_als_includes})
  install(TARGETS als_static EXPORT alsTargets
    ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}" COMPONENT dev
    ${_als_includes})
  unset(_als_includes)

  # A directory install is expanded at install time, so headers added later
  # (include/als_trace.h, ...) are installed without re-running CMake.
  install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/"
    DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}"
    COMPONENT dev
    FILES_MATCHING PATTERN "*.h")

  # Both targets name Threads::Threads, which alsConfig.cmake recreates;
  # nothing else (ck is compile-time only, see lib/CMakeLists.txt).
  install(EXPORT alsTargets
    NAMESPACE als::
    DESTINATION "${ALS_INSTALL_CMAKEDIR}"
    COMPONENT dev)

  configure_package_config_file(
    "${CMAKE_CURRENT_LIST_DIR}/alsConfig.cmake.in"
    "${PROJECT_BINARY_DIR}/alsConfig.cmake"
    INSTALL_DESTINATION "${ALS_INSTALL_CMAKEDIR}")
  # SameMajorVersion: the SONAME carries only the major version, so any
  # library with the same major is a drop-in for what a consumer asked for.
  write_basic_package_version_file(
    "${PROJECT_BINARY_DIR}/alsConfigVersion.cmake"
    VERSION "${PROJECT_VERSION}"
    COMPATIBILITY SameMajorVersion)
  install(FILES
    "${PROJECT_BINARY_DIR}/alsConfig.cmake"
    "${PROJECT_BINARY_DIR}/alsConfigVersion.cmake"
    DESTINATION "${ALS_INSTALL_CMAKEDIR}"
    COMPONENT dev)

  # pkg-config. The prefix is only known for sure at install time
  # (`cmake --install --prefix P` and CPack both override the configured
  # CMAKE_INSTALL_PREFIX), so the file is generated in two steps: everything
  # else now, the prefix by the install script itself. An absolute
  # CMAKE_INSTALL_LIBDIR/INCLUDEDIR is used as given.
  foreach(kind LIBDIR INCLUDEDIR)
    if(IS_ABSOLUTE "${CMAKE_INSTALL_${kind}}")
      set(ALS_PC_${kind} "${CMAKE_INSTALL_${kind}}")
    else()
      set(ALS_PC_${kind} "\${prefix}/${CMAKE_INSTALL_${kind}}")
    endif()
  endforeach()
  set(ALS_PC_PREFIX "@ALS_PC_PREFIX@")  # kept for the install-time step
  configure_file("${CMAKE_CURRENT_LIST_DIR}/als.pc.in"
                 "${PROJECT_BINARY_DIR}/als.pc.stage" @ONLY)
  unset(ALS_PC_PREFIX)
  install(CODE "
    set(ALS_PC_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
    configure_file(\"${PROJECT_BINARY_DIR}/als.pc.stage\"
                   \"${PROJECT_BINARY_DIR}/als.pc\" @ONLY)
    " COMPONENT dev)
  install(FILES "${PROJECT_BINARY_DIR}/als.pc"
    DESTINATION "${CMAKE_INSTALL_LIBDIR}/pkgconfig"
    COMPONENT dev)

  # Lets a build tree be used without installing (-Dals_DIR=<build>).
  export(EXPORT alsTargets NAMESPACE als::
         FILE "${PROJECT_BINARY_DIR}/alsTargets.cmake")
endif()

include("${CMAKE_CURRENT_LIST_DIR}/docs.cmake")
# CPack belongs to the top-level project: as a subproject it would take over
# the parent's `package` target.
if(ALS_INSTALL AND PROJECT_IS_TOP_LEVEL)
  include("${CMAKE_CURRENT_LIST_DIR}/cpack.cmake")
endif()
