// resa/sim/json.h — a small strict JSON reader (RFC 8259) for config.json, safetensors headers and
// index files, plus string quoting for the writers. Numbers keep their source text so 64-bit
// integers (safetensors offsets) convert exactly. Tested by tests/sim/test_safetensors.cpp.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace resa::sim {

class Json {
 public:
  enum class Kind { Null, Bool, Number, String, Array, Object };

  Kind kind() const { return kind_; }
  bool is_null() const { return kind_ == Kind::Null; }
  bool is_object() const { return kind_ == Kind::Object; }
  bool is_array() const { return kind_ == Kind::Array; }
  bool is_string() const { return kind_ == Kind::String; }
  bool is_number() const { return kind_ == Kind::Number; }
  bool is_bool() const { return kind_ == Kind::Bool; }

  // Accessors throw resa::InvalidArgument naming `what` when the kind does not match.
  bool as_bool(const std::string& what) const;
  double as_double(const std::string& what) const;
  int64_t as_int(const std::string& what) const;  // exact; rejects fractions and out-of-range
  const std::string& as_string(const std::string& what) const;
  const std::vector<Json>& as_array(const std::string& what) const;
  // Object members in file order (duplicate keys are rejected by the parser).
  const std::vector<std::pair<std::string, Json>>& as_object(const std::string& what) const;
  const Json* find(std::string_view key) const;  // nullptr when absent or not an object

  static Json parse(std::string_view text, const std::string& what);  // throws InvalidArgument

 private:
  friend class JsonParser;
  Kind kind_ = Kind::Null;
  bool b_ = false;
  std::string text_;  // number source text or string value
  std::vector<Json> items_;
  std::vector<std::pair<std::string, Json>> members_;
};

std::string json_quote(std::string_view s);  // "..." with JSON escapes

}  // namespace resa::sim
