// Entry point of xgboost_addon.node. Only core/xgboost/index.ts loads this; its
// exports are an implementation detail of that wrapper.
#include <napi.h>
#include <xgboost/c_api.h>

#include <string>

#include "booster.h"
#include "shap_tables.h"
#include "train.h"

namespace xgbaddon {
namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  Napi::Function booster = NativeBooster::DefineClass(env);
  data->booster_constructor = Napi::Persistent(booster);
  Napi::Function shap_tables = NativeShapTables::DefineClass(env);
  data->shap_tables_constructor = Napi::Persistent(shap_tables);
  env.SetInstanceData<AddonData>(data);  // deleted by node-addon-api at env teardown

  int major = 0;
  int minor = 0;
  int patch = 0;
  XGBoostVersion(&major, &minor, &patch);

  exports.Set("NativeBooster", booster);
  exports.Set("buildShapTables", Napi::Function::New(env, BuildShapTablesAsync, "buildShapTables"));
  exports.Set("train", Napi::Function::New(env, Train, "train"));
  exports.Set("version", Napi::String::New(env, std::to_string(major) + "." + std::to_string(minor) + "." +
                                                    std::to_string(patch)));
  return exports;
}

}  // namespace
}  // namespace xgbaddon

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return xgbaddon::Init(env, exports); }

NODE_API_MODULE(xgboost_addon, InitAddon)
