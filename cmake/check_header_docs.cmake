# cmake -DHEADERS=a.h;b.h -P check_header_docs.cmake
#
# Run by the `docs` target before Doxygen. Doxygen only reports undocumented
# functions, typedefs and macros outside groups when their file itself is
# documented: in a header without a @file comment they vanish from the
# reference without a single warning. So every public header must have one.
set(missing "")
foreach(h IN LISTS HEADERS)
  file(READ "${h}" text)
  if(NOT text MATCHES "/\\*[*!][ \t\r\n*]*[@\\\\]file")
    list(APPEND missing "${h}")
  endif()
endforeach()
if(missing)
  list(JOIN missing "\n  " missing)
  message(FATAL_ERROR "public headers without a /** @file ... */ comment "
                      "(Doxygen would skip their undocumented symbols "
                      "silently):\n  ${missing}")
endif()
