// json.cpp — strict recursive-descent JSON parser (depth-limited, so hostile input cannot
// overflow the stack). Errors name the input and the byte offset.
#include "resa/sim/json.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>

#include "resa/config.h"

namespace resa::sim {

namespace {
const char* kind_name(Json::Kind k) {
  switch (k) {
    case Json::Kind::Null: return "null";
    case Json::Kind::Bool: return "a boolean";
    case Json::Kind::Number: return "a number";
    case Json::Kind::String: return "a string";
    case Json::Kind::Array: return "an array";
    case Json::Kind::Object: return "an object";
  }
  return "?";
}
[[noreturn]] void wrong_kind(const std::string& what, const char* want, Json::Kind got) {
  throw InvalidArgument(what + ": expected " + want + ", found " + kind_name(got));
}
}  // namespace

class JsonParser {
 public:
  JsonParser(std::string_view t, const std::string& what) : t_(t), what_(what) {}
  Json parse_document() {
    ws();
    Json v = value(0);
    ws();
    if (p_ != t_.size()) fail("unexpected trailing characters");
    return v;
  }

 private:
  std::string_view t_;
  const std::string& what_;
  size_t p_ = 0;

  [[noreturn]] void fail(const std::string& msg) const {
    throw InvalidArgument(what_ + ": malformed JSON at byte " + std::to_string(p_) + ": " + msg);
  }
  void ws() {
    while (p_ < t_.size() && (t_[p_] == ' ' || t_[p_] == '\t' || t_[p_] == '\n' || t_[p_] == '\r')) ++p_;
  }
  bool eat(char c) {
    if (p_ < t_.size() && t_[p_] == c) {
      ++p_;
      return true;
    }
    return false;
  }
  void expect_word(std::string_view w) {
    if (t_.substr(p_, w.size()) != w) fail("invalid literal");
    p_ += w.size();
  }
  Json value(int depth) {
    if (depth > 64) fail("nesting deeper than 64 levels");
    if (p_ >= t_.size()) fail("unexpected end of input");
    Json v;
    const char c = t_[p_];
    if (c == '{') {
      v.kind_ = Json::Kind::Object;
      ++p_;
      ws();
      if (eat('}')) return v;
      for (;;) {
        ws();
        if (p_ >= t_.size() || t_[p_] != '"') fail("expected a string key");
        std::string key = string_body();
        for (const auto& m : v.members_)
          if (m.first == key) fail("duplicate key \"" + key + "\"");
        ws();
        if (!eat(':')) fail("expected ':'");
        ws();
        v.members_.emplace_back(std::move(key), value(depth + 1));
        ws();
        if (eat('}')) return v;
        if (!eat(',')) fail("expected ',' or '}'");
      }
    }
    if (c == '[') {
      v.kind_ = Json::Kind::Array;
      ++p_;
      ws();
      if (eat(']')) return v;
      for (;;) {
        ws();
        v.items_.push_back(value(depth + 1));
        ws();
        if (eat(']')) return v;
        if (!eat(',')) fail("expected ',' or ']'");
      }
    }
    if (c == '"') {
      v.kind_ = Json::Kind::String;
      v.text_ = string_body();
      return v;
    }
    if (c == 't') { expect_word("true"); v.kind_ = Json::Kind::Bool; v.b_ = true; return v; }
    if (c == 'f') { expect_word("false"); v.kind_ = Json::Kind::Bool; v.b_ = false; return v; }
    if (c == 'n') { expect_word("null"); return v; }
    if (c == '-' || (c >= '0' && c <= '9')) {
      const size_t s = p_;
      eat('-');
      if (eat('0')) {
      } else if (p_ < t_.size() && t_[p_] >= '1' && t_[p_] <= '9') {
        while (p_ < t_.size() && t_[p_] >= '0' && t_[p_] <= '9') ++p_;
      } else {
        fail("invalid number");
      }
      if (eat('.')) {
        if (p_ >= t_.size() || t_[p_] < '0' || t_[p_] > '9') fail("invalid number");
        while (p_ < t_.size() && t_[p_] >= '0' && t_[p_] <= '9') ++p_;
      }
      if (p_ < t_.size() && (t_[p_] == 'e' || t_[p_] == 'E')) {
        ++p_;
        if (!eat('+')) eat('-');
        if (p_ >= t_.size() || t_[p_] < '0' || t_[p_] > '9') fail("invalid number");
        while (p_ < t_.size() && t_[p_] >= '0' && t_[p_] <= '9') ++p_;
      }
      v.kind_ = Json::Kind::Number;
      v.text_ = std::string(t_.substr(s, p_ - s));
      return v;
    }
    fail(std::string("unexpected character '") + c + "'");
  }
  static void put_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  uint32_t hex4() {
    if (p_ + 4 > t_.size()) fail("truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = t_[p_++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= static_cast<uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f') v |= static_cast<uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= static_cast<uint32_t>(c - 'A' + 10);
      else fail("invalid \\u escape");
    }
    return v;
  }
  std::string string_body() {
    ++p_;  // opening quote
    std::string out;
    for (;;) {
      if (p_ >= t_.size()) fail("unterminated string");
      const char c = t_[p_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) fail("control character in string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (p_ >= t_.size()) fail("unterminated escape");
      const char e = t_[p_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00) {
            if (!(eat('\\') && eat('u'))) fail("unpaired surrogate");
            const uint32_t lo = hex4();
            if (lo < 0xDC00 || lo >= 0xE000) fail("unpaired surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp < 0xE000) {
            fail("unpaired surrogate");
          }
          put_utf8(out, cp);
          break;
        }
        default: fail(std::string("invalid escape '\\") + e + "'");
      }
    }
  }
};

Json Json::parse(std::string_view text, const std::string& what) {
  return JsonParser(text, what).parse_document();
}

bool Json::as_bool(const std::string& what) const {
  if (kind_ != Kind::Bool) wrong_kind(what, "a boolean", kind_);
  return b_;
}
double Json::as_double(const std::string& what) const {
  if (kind_ != Kind::Number) wrong_kind(what, "a number", kind_);
  return std::strtod(text_.c_str(), nullptr);
}
int64_t Json::as_int(const std::string& what) const {
  if (kind_ != Kind::Number) wrong_kind(what, "an integer", kind_);
  if (text_.find_first_of(".eE") != std::string::npos) {
    const double d = std::strtod(text_.c_str(), nullptr);
    if (d != std::floor(d) || std::fabs(d) > 9.0e15)
      throw InvalidArgument(what + ": expected an integer, found " + text_);
    return static_cast<int64_t>(d);
  }
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(text_.c_str(), &end, 10);
  if (errno == ERANGE) throw InvalidArgument(what + ": integer " + text_ + " out of range");
  return v;
}
const std::string& Json::as_string(const std::string& what) const {
  if (kind_ != Kind::String) wrong_kind(what, "a string", kind_);
  return text_;
}
const std::vector<Json>& Json::as_array(const std::string& what) const {
  if (kind_ != Kind::Array) wrong_kind(what, "an array", kind_);
  return items_;
}
const std::vector<std::pair<std::string, Json>>& Json::as_object(const std::string& what) const {
  if (kind_ != Kind::Object) wrong_kind(what, "an object", kind_);
  return members_;
}
const Json* Json::find(std::string_view key) const {
  if (kind_ != Kind::Object) return nullptr;
  for (const auto& m : members_)
    if (m.first == key) return &m.second;
  return nullptr;
}

std::string json_quote(std::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

}  // namespace resa::sim
