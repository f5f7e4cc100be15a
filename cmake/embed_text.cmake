# Writes OUTPUT, a C++ source defining `const char NAME[]` with INPUT's bytes
# (NUL-terminated) and `const size_t NAME_size`: a data file compiled into the
# library, so the program needs no file beside it wherever it runs.
file(READ "${INPUT}" hex HEX)
string(LENGTH "${hex}" hex_length)
math(EXPR size "${hex_length} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "'\\\\x\\1'," bytes "${hex}")
file(WRITE "${OUTPUT}" "// Generated from ${INPUT} by cmake/embed_text.cmake; do not edit.\n"
  "#include <cstddef>\nextern const char ${NAME}[];\nextern const std::size_t ${NAME}_size;\n"
  "const char ${NAME}[] = {\n${bytes}'\\0'};\nconst std::size_t ${NAME}_size = ${size};\n")
