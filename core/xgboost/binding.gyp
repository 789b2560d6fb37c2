{
  "targets": [
    {
      "target_name": "xgboost_addon",
      "sources": ["src/addon.cc", "src/booster.cc", "src/common.cc", "src/shap_tables.cc", "src/train.cc", "src/treeshap.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "/usr/include"],
      "defines": ["NAPI_CPP_EXCEPTIONS", "NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions", "-O3"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17", "-O3"],
      "cflags": ["-O2"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "libraries": ["-lxgboost"]
    }
  ]
}
