// Typed errors of the bitnet core and the BITNET_CHECK macro that throws them.
//
// The library never exits or aborts on user input: every problem with a file, a shape or an
// option becomes one of these exceptions, whose message names what is wrong (file, tensor, key,
// byte offset, expected vs found). The Python bindings map them to Python exceptions:
//   FormatError      -> bitnet.FormatError      (a ValueError)
//   ShapeError       -> bitnet.ShapeError       (a ValueError)
//   UnsupportedError -> bitnet.UnsupportedError (a ValueError)
// Kernels do not throw; inputs are validated once at the op boundary.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace bitnet {

class Error : public std::runtime_error {
 public:
    explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// A model file (or a checkpoint) is malformed: truncated, corrupt, missing keys or tensors.
class FormatError : public Error {
 public:
    explicit FormatError(const std::string& message) : Error(message) {}
};

// An argument has the wrong shape or is out of range (token id, sequence length, ...).
class ShapeError : public Error {
 public:
    explicit ShapeError(const std::string& message) : Error(message) {}
};

// A well-formed input asks for something this build does not implement (an unknown tensor type,
// architecture or instruction set).
class UnsupportedError : public Error {
 public:
    explicit UnsupportedError(const std::string& message) : Error(message) {}
};

// Concatenates any streamable values into a string: str_cat("tensor '", name, "' has ", n, " dims").
template <typename... Args>
std::string str_cat(Args&&... args) {
    std::ostringstream out;
    (out << ... << std::forward<Args>(args));
    return out.str();
}

}  // namespace bitnet

// Throws ErrorType(str_cat(...)) when cond is false. Used at API and file-format boundaries.
#define BITNET_CHECK(cond, ErrorType, ...)                    \
    do {                                                      \
        if (!(cond)) throw ErrorType(::bitnet::str_cat(__VA_ARGS__)); \
    } while (0)
