// Shared helpers for the XGBoost addon: error translation, RAII handle owners and
// the dense in-place prediction used by both the sync and async predict paths.
#pragma once

#include <xgboost/c_api.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace xgbaddon {

// Thrown by Check(). Plain C++ (not Napi::Error) so it can be raised on a worker
// thread, where no napi_env may be touched; the JS-thread side converts it.
class XgbError : public std::runtime_error {
 public:
  explicit XgbError(const std::string& message) : std::runtime_error(message) {}
};

// XGBoost errors carry a "[hh:mm:ss] file:line: " prefix and a "Stack trace:" tail
// that only make sense to XGBoost developers; strip both so users see the reason.
std::string CleanXgbMessage(const char* raw);

// XGBGetLastError() is thread-local, so this must run on the thread that made the
// failing call (the worker thread inside Execute()).
[[noreturn]] void ThrowLastError(const char* function);

inline void Check(int rc, const char* function) {
  if (rc != 0) ThrowLastError(function);
}

// Owns a DMatrixHandle; XGDMatrixFree's status is ignored because a destructor
// cannot report it and the handle is unusable afterwards either way.
class DMatrixOwner {
 public:
  DMatrixOwner() = default;
  explicit DMatrixOwner(DMatrixHandle h) : handle_(h) {}
  DMatrixOwner(const DMatrixOwner&) = delete;
  DMatrixOwner& operator=(const DMatrixOwner&) = delete;
  ~DMatrixOwner() { Reset(); }
  void Reset() {
    if (handle_ != nullptr) XGDMatrixFree(handle_);
    handle_ = nullptr;
  }
  DMatrixHandle get() const { return handle_; }
  DMatrixHandle* out() {
    Reset();
    return &handle_;
  }

 private:
  DMatrixHandle handle_ = nullptr;
};

class BoosterOwner {
 public:
  BoosterOwner() = default;
  explicit BoosterOwner(BoosterHandle h) : handle_(h) {}
  BoosterOwner(const BoosterOwner&) = delete;
  BoosterOwner& operator=(const BoosterOwner&) = delete;
  BoosterOwner(BoosterOwner&& other) noexcept : handle_(other.release()) {}
  BoosterOwner& operator=(BoosterOwner&& other) noexcept {
    if (this != &other) {
      Reset();
      handle_ = other.release();
    }
    return *this;
  }
  ~BoosterOwner() { Reset(); }
  void Reset() {
    if (handle_ != nullptr) XGBoosterFree(handle_);
    handle_ = nullptr;
  }
  BoosterHandle get() const { return handle_; }
  BoosterHandle release() {
    BoosterHandle h = handle_;
    handle_ = nullptr;
    return h;
  }
  BoosterHandle* out() {
    Reset();
    return &handle_;
  }

 private:
  BoosterHandle handle_ = nullptr;
};

// A booster shared between its JS wrapper and any in-flight async work, so that
// dispose() or GC during predictAsync() defers XGBoosterFree until the work ends.
// The mutex lets predictions run concurrently (XGBoost's in-place predict is
// thread-safe) while excluding mutations (setParam, setFeatureNames) that
// invalidate the learner's configuration.
struct BoosterState {
  explicit BoosterState(BoosterHandle h) : owner(h) {}
  BoosterOwner owner;
  std::shared_mutex mutex;
  // Set once in-place prediction has failed where the DMatrix path worked (gblinear
  // in XGBoost 1.7 has no in-place predict), so later calls skip the failed attempt.
  std::atomic<bool> inplace_unsupported{false};
};

// Predicts rows*cols row-major floats (NaN = missing). Prefers XGBoost's in-place
// prediction, which reads `data` directly instead of building a DMatrix. Caller
// holds at least a shared lock on state->mutex.
void PredictDense(BoosterState* state, const float* data, uint64_t rows, uint64_t cols,
                  std::vector<float>* out);

// Per-feature contributions in margin space (TreeSHAP for tree boosters, weight x value
// for gblinear): rows*(cols+1) row-major floats, the bias (expected margin) last in each
// row, so that a row's values sum to its untransformed margin. Needs a DMatrix: XGBoost
// 1.7 has no in-place contribution prediction. Caller holds at least a shared lock.
void PredictContribsDense(BoosterState* state, const float* data, uint64_t rows, uint64_t cols,
                          std::vector<float>* out);

}  // namespace xgbaddon
