// JS-facing TreeSHAP tables (wrapped by core/xgboost/index.ts, never used directly): built on the libuv
// thread pool from an XGBoost JSON model, evaluated on the calling thread or on the pool.
#pragma once

#include <napi.h>

#include <memory>
#include <string>

#include "treeshap.h"

namespace xgbaddon {

// The bytes of a model given as a string or a Uint8Array (a Buffer read from the registry), copied so
// that work on another thread never reads memory the caller may reuse.
std::string ReadModelBytes(Napi::Value value, const char* what);

class NativeShapTables : public Napi::ObjectWrap<NativeShapTables> {
 public:
  static Napi::Function DefineClass(Napi::Env env);
  static Napi::Object NewInstance(Napi::Env env, std::shared_ptr<const ShapTables> tables);

  explicit NativeShapTables(const Napi::CallbackInfo& info);

 private:
  Napi::Value Contributions(const Napi::CallbackInfo& info);
  Napi::Value ContributionsAsync(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);
  void Dispose(const Napi::CallbackInfo& info);

  std::shared_ptr<const ShapTables> Live(Napi::Env env) const;

  // Shared with in-flight contributionsAsync work, so dispose() during it frees the tables after it.
  std::shared_ptr<const ShapTables> tables_;
};

// buildShapTables(model: string | Uint8Array, maxPathFeatures, maxTableBytes): a promise of the tables,
// rejected with an Error whose `declined` is true when the model is outside what they reproduce.
Napi::Value BuildShapTablesAsync(const Napi::CallbackInfo& info);

}  // namespace xgbaddon
