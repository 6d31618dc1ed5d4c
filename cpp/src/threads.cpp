// Work-sharing pool. A call (a "job") is a counter of tasks; workers and the calling thread claim
// task numbers with fetch_add until none remain, so a call never waits for a free worker and
// several calls from different Python threads share the workers fairly.
#include "pyfacematch/threads.hpp"

#include "pyfacematch/errors.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace pfm {

namespace {

struct Job {
    const std::function<void(std::size_t)>* fn;
    std::size_t n;
    std::atomic<std::size_t> next{0};
    std::atomic<std::size_t> done{0};
    std::mutex m;
    std::condition_variable cv;

    // Runs tasks until none are left to claim; returns after finishing the last one it took.
    void work() {
        for (;;) {
            std::size_t t = next.fetch_add(1, std::memory_order_relaxed);
            if (t >= n) return;
            (*fn)(t);
            if (done.fetch_add(1, std::memory_order_acq_rel) + 1 == n) {
                std::lock_guard<std::mutex> lk(m);
                cv.notify_all();
            }
        }
    }
};

class Pool {
public:
    Pool() : threads_(1) { threads_ = 1 + start(default_threads() - 1); }
    ~Pool() { stop(); }

    void run(std::size_t n, const std::function<void(std::size_t)>& fn) {
        if (n == 0) return;
        if (n == 1 || threads_ <= 1) {
            for (std::size_t t = 0; t < n; ++t) fn(t);
            return;
        }
        auto job = std::make_shared<Job>();
        job->fn = &fn;
        job->n = n;
        {
            std::lock_guard<std::mutex> lk(m_);
            queue_.push_back(job);
        }
        cv_.notify_all();
        job->work();
        {
            std::unique_lock<std::mutex> lk(job->m);
            job->cv.wait(lk, [&] { return job->done.load(std::memory_order_acquire) == n; });
        }
        std::lock_guard<std::mutex> lk(m_);
        auto it = std::find(queue_.begin(), queue_.end(), job);
        if (it != queue_.end()) queue_.erase(it);
    }

    void resize(std::size_t n) {
        std::lock_guard<std::mutex> rl(resize_m_);
        if (n < 1) n = 1;
        if (n > max_threads()) n = max_threads();
        stop();
        threads_ = 1 + start(n - 1);
    }

    std::size_t size() const { return threads_; }

private:
    static std::size_t default_threads() {
        unsigned h = std::thread::hardware_concurrency();
        return std::min<std::size_t>(h ? h : 1, max_threads());
    }

    // Starts up to `workers` threads; returns how many started. When the operating system refuses
    // one (std::system_error: thread or memory limits), the pool runs with those it has: a call
    // then takes longer instead of failing.
    std::size_t start(std::size_t workers) {
        stopping_ = false;
        workers_.reserve(workers);
        for (std::size_t w = 0; w < workers; ++w) {
            try {
                workers_.emplace_back([this] { loop(); });
            } catch (const std::system_error&) {
                break;
            }
        }
        return workers_.size();
    }

    void stop() {
        {
            std::lock_guard<std::mutex> lk(m_);
            stopping_ = true;
        }
        cv_.notify_all();
        for (auto& t : workers_) t.join();
        workers_.clear();
    }

    void loop() {
        for (;;) {
            std::shared_ptr<Job> job;
            {
                std::unique_lock<std::mutex> lk(m_);
                cv_.wait(lk, [&] { return stopping_ || has_work(); });
                if (stopping_) return;
                for (auto& j : queue_)
                    if (j->next.load(std::memory_order_relaxed) < j->n) {
                        job = j;
                        break;
                    }
            }
            if (job) job->work();
        }
    }

    bool has_work() const {
        for (auto& j : queue_)
            if (j->next.load(std::memory_order_relaxed) < j->n) return true;
        return false;
    }

    std::mutex m_, resize_m_;
    std::condition_variable cv_;
    std::deque<std::shared_ptr<Job>> queue_;
    std::vector<std::thread> workers_;
    std::atomic<std::size_t> threads_;
    bool stopping_ = false;
};

Pool& pool() {
    static Pool p;
    return p;
}

}  // namespace

void parallel_for(std::size_t n_tasks, const std::function<void(std::size_t)>& fn) { pool().run(n_tasks, fn); }

std::size_t max_threads() {
    const unsigned h = std::thread::hardware_concurrency();
    return std::max<std::size_t>(256, 4 * (std::size_t)h);
}

void set_num_threads(std::size_t n) {
    if (n < 1 || n > max_threads())
        throw Error(ErrorKind::input, "number of threads must be within [1, " + std::to_string(max_threads()) +
                                          "], got " + std::to_string(n) +
                                          ": use about the machine's hardware threads");
    pool().resize(n);
}

std::size_t get_num_threads() { return pool().size(); }

}  // namespace pfm
