#pragma once
/** @file threads.hpp
 *  @brief A small work-sharing thread pool: a call splits into tasks, the calling thread helps,
 *         several calls (from several Python threads) may run at once.
 */
#include <cstddef>
#include <functional>

namespace pfm {

/** @brief Runs fn(0) … fn(n_tasks-1) on the pool and the calling thread; returns when all are done.
 *  fn must not throw. Safe to call concurrently from many threads. */
void parallel_for(std::size_t n_tasks, const std::function<void(std::size_t)>& fn);

/** @brief Most threads set_num_threads accepts: max(256, 4 × hardware threads). */
std::size_t max_threads();

/** @brief Sets the number of threads a call may use (1 … max_threads(); the caller counts as one);
 *  throws pfm::Error (input) outside that range. If the OS refuses to start some threads, the pool
 *  keeps those it started (get_num_threads() tells how many) instead of failing. */
void set_num_threads(std::size_t n);

/** @brief Number of threads a call may use (default: hardware concurrency). */
std::size_t get_num_threads();

}  // namespace pfm
