# API reference: HTML from the public headers with Doxygen. Undocumented
# public symbols (or broken doc commands) fail the target; see
# docs/Doxyfile.in. Without Doxygen there is simply no target, so builds on
# machines without it are not affected.
find_package(Doxygen QUIET)
if(DOXYGEN_FOUND)
  set(ALS_DOCS_OUTPUT "${PROJECT_BINARY_DIR}/docs")
  configure_file("${PROJECT_SOURCE_DIR}/docs/Doxyfile.in"
                 "${PROJECT_BINARY_DIR}/Doxyfile" @ONLY)
  # Inside someone else's build, a plain `docs` could clash with theirs.
  if(PROJECT_IS_TOP_LEVEL)
    set(_als_docs_target docs)
  else()
    set(_als_docs_target als_docs)
  endif()
  file(GLOB _als_public_headers CONFIGURE_DEPENDS
       "${PROJECT_SOURCE_DIR}/include/*.h")
  add_custom_target(${_als_docs_target}
    COMMAND "${CMAKE_COMMAND}" "-DHEADERS=${_als_public_headers}"
            -P "${CMAKE_CURRENT_LIST_DIR}/check_header_docs.cmake"
    COMMAND Doxygen::doxygen "${PROJECT_BINARY_DIR}/Doxyfile"
    WORKING_DIRECTORY "${PROJECT_BINARY_DIR}"
    DEPENDS ${_als_public_headers} "${PROJECT_BINARY_DIR}/Doxyfile"
    COMMENT "API reference -> ${ALS_DOCS_OUTPUT}/html/index.html"
    VERBATIM)
  unset(_als_docs_target)
  unset(_als_public_headers)
endif()
