#pragma once

#include <napi.h>

namespace xgbaddon {

// train(options) -> { promise, abort }. See core/xgboost/index.ts for the contract;
// options are validated there and re-checked here only as far as memory safety needs.
Napi::Value Train(const Napi::CallbackInfo& info);

}  // namespace xgbaddon
