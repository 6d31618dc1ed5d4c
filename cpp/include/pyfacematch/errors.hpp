#pragma once
/** @file errors.hpp
 *  @brief Typed errors of the core; the bindings translate each kind to the matching
 *         pyfacematch.errors class (which is also a builtin ValueError/TypeError/...).
 */
#include <stdexcept>
#include <string>

namespace pfm {

/** @brief Which Python error class an Error maps to. */
enum class ErrorKind { input, dimension, non_finite, dtype, empty, zero_vector };

/** @brief Base of the core's errors: a kind plus an actionable message (no biometric data). */
class Error : public std::runtime_error {
public:
    Error(ErrorKind kind, const std::string& msg) : std::runtime_error(msg), kind_(kind) {}
    /** @brief The kind the bindings use to pick the Python class. */
    ErrorKind kind() const noexcept { return kind_; }

private:
    ErrorKind kind_;
};

}  // namespace pfm
