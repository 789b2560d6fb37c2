// JS-facing Booster object (wrapped by core/xgboost/index.ts, never used directly).
#pragma once

#include <napi.h>

#include <memory>
#include <string>

#include "common.h"

namespace xgbaddon {

// Per-environment state, so the addon also works when loaded in several worker_threads.
struct AddonData {
  Napi::FunctionReference booster_constructor;
  Napi::FunctionReference shap_tables_constructor;
};

// Runs `fn` and turns XgbError into a JS Error. Only valid on the JS thread.
template <typename Fn>
auto TranslateErrors(Napi::Env env, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const XgbError& e) {
    throw Napi::Error::New(env, e.what());
  }
}

// Reads a Float32Array argument and checks its length against rows*cols, so native
// code never reads past the end of a buffer even if the TS validation is bypassed.
struct DenseArg {
  Napi::TypedArrayOf<float> array;
  uint64_t rows = 0;
  uint64_t cols = 0;
};
DenseArg ReadDense(const Napi::CallbackInfo& info, size_t first_index, const char* what);
uint64_t ReadCount(Napi::Value value, const std::string& what);

class NativeBooster : public Napi::ObjectWrap<NativeBooster> {
 public:
  static Napi::Function DefineClass(Napi::Env env);
  // Wraps an owned handle in a new JS object; used by loadJson and train.
  static Napi::Object NewInstance(Napi::Env env, std::shared_ptr<BoosterState> state);

  explicit NativeBooster(const Napi::CallbackInfo& info);

 private:
  static Napi::Value LoadJson(const Napi::CallbackInfo& info);
  static Napi::Value LoadJsonAsync(const Napi::CallbackInfo& info);
  Napi::Value SaveJson(const Napi::CallbackInfo& info);
  Napi::Value Predict(const Napi::CallbackInfo& info);
  Napi::Value PredictAsync(const Napi::CallbackInfo& info);
  Napi::Value PredictContribs(const Napi::CallbackInfo& info);
  Napi::Value PredictContribsAsync(const Napi::CallbackInfo& info);
  Napi::Value RunPredict(const Napi::CallbackInfo& info, bool contribs);
  Napi::Value QueuePredict(const Napi::CallbackInfo& info, bool contribs);
  Napi::Value FeatureScore(const Napi::CallbackInfo& info);
  void SetFeatureNames(const Napi::CallbackInfo& info);
  Napi::Value NumFeatures(const Napi::CallbackInfo& info);
  void SetParam(const Napi::CallbackInfo& info);
  void Dispose(const Napi::CallbackInfo& info);

  // The live state, or a thrown Error when dispose() has been called.
  std::shared_ptr<BoosterState> Live(Napi::Env env) const;

  // Dropped by dispose() and by the ObjectWrap destructor (GC finalizer); the
  // XGBoost handle is freed once no async work holds the state any more.
  std::shared_ptr<BoosterState> state_;
};

}  // namespace xgbaddon
