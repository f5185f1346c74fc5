// safetensors.cpp — validated safetensors reader/writer and sharded checkpoint index.
#include "resa/sim/safetensors.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <stdexcept>

#include "resa/config.h"
#include "resa/numerics.h"
#include "resa/sim/json.h"

namespace resa::sim {

namespace {
constexpr uint64_t kMaxHeader = 100ull << 20;  // the format's own limit (100 MB)

struct DTypeRow {
  StDType t;
  const char* name;
  size_t size;
};
constexpr DTypeRow kDTypes[] = {
    {StDType::BOOL, "BOOL", 1}, {StDType::U8, "U8", 1},     {StDType::I8, "I8", 1},
    {StDType::I16, "I16", 2},   {StDType::U16, "U16", 2},   {StDType::F16, "F16", 2},
    {StDType::BF16, "BF16", 2}, {StDType::I32, "I32", 4},   {StDType::U32, "U32", 4},
    {StDType::F32, "F32", 4},   {StDType::F64, "F64", 8},   {StDType::I64, "I64", 8},
    {StDType::U64, "U64", 8}};

std::vector<uint8_t> read_all(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    throw InvalidArgument(path + ": no such file (or not a regular file)");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InvalidArgument(path + ": cannot open for reading");
  in.seekg(0, std::ios::end);
  const auto size = static_cast<size_t>(in.tellg());
  in.seekg(0);
  std::vector<uint8_t> b(size);
  if (size && !in.read(reinterpret_cast<char*>(b.data()), static_cast<std::streamsize>(size)))
    throw InvalidArgument(path + ": read error");
  return b;
}
}  // namespace

const char* st_dtype_name(StDType t) {
  for (const auto& r : kDTypes)
    if (r.t == t) return r.name;
  return "?";
}
size_t st_dtype_size(StDType t) {
  for (const auto& r : kDTypes)
    if (r.t == t) return r.size;
  return 0;
}
StDType st_dtype_parse(const std::string& name, const std::string& what) {
  for (const auto& r : kDTypes)
    if (name == r.name) return r.t;
  throw InvalidArgument(what + ": unknown dtype \"" + name + "\"");
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (auto s : shape) n *= s;
  return n;
}

SafetensorsFile SafetensorsFile::open(const std::string& path) { return from_bytes(read_all(path), path); }

SafetensorsFile SafetensorsFile::from_bytes(std::vector<uint8_t> bytes, const std::string& what) {
  SafetensorsFile f;
  f.path_ = what;
  f.bytes_ = std::move(bytes);
  const auto& b = f.bytes_;
  if (b.size() < 8)
    throw InvalidArgument(what + ": truncated safetensors file (" + std::to_string(b.size()) +
                          " bytes, the 8-byte header length is missing)");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | b[static_cast<size_t>(i)];
  if (n < 2 || n > kMaxHeader)
    throw InvalidArgument(what + ": bad header length " + std::to_string(n) + " (must be in [2, 100 MB])");
  if (n > b.size() - 8)
    throw InvalidArgument(what + ": truncated: header length " + std::to_string(n) + " exceeds the " +
                          std::to_string(b.size() - 8) + " bytes after the length field");
  f.data_start_ = 8 + static_cast<size_t>(n);
  const std::string_view text(reinterpret_cast<const char*>(b.data() + 8), static_cast<size_t>(n));
  if (text.empty() || text[0] != '{')
    throw InvalidArgument(what + ": header does not start with '{'");
  const Json header = Json::parse(text, what + " (header)");
  const uint64_t data_size = b.size() - f.data_start_;
  for (const auto& [name, entry] : header.as_object(what + " header")) {
    const std::string ctx = what + ": tensor \"" + name + "\"";
    if (name == "__metadata__") {
      for (const auto& [k, v] : entry.as_object(what + ": __metadata__"))
        f.metadata_[k] = v.as_string(what + ": __metadata__." + k);
      continue;
    }
    TensorInfo t;
    t.name = name;
    const Json* dt = entry.find("dtype");
    const Json* sh = entry.find("shape");
    const Json* off = entry.find("data_offsets");
    if (!entry.is_object() || !dt || !sh || !off)
      throw InvalidArgument(ctx + ": entry needs dtype, shape and data_offsets");
    if (entry.as_object(ctx).size() != 3) throw InvalidArgument(ctx + ": unexpected keys in entry");
    t.dtype = st_dtype_parse(dt->as_string(ctx + " dtype"), ctx);
    uint64_t count = 1;
    for (const auto& s : sh->as_array(ctx + " shape")) {
      const int64_t v = s.as_int(ctx + " shape");
      if (v < 0) throw InvalidArgument(ctx + ": negative dimension " + std::to_string(v));
      t.shape.push_back(v);
      if (v != 0 && count > std::numeric_limits<uint64_t>::max() / 16 / static_cast<uint64_t>(v))
        throw InvalidArgument(ctx + ": shape too large");
      count *= static_cast<uint64_t>(v);
    }
    const auto& o = off->as_array(ctx + " data_offsets");
    if (o.size() != 2) throw InvalidArgument(ctx + ": data_offsets must hold two integers");
    const int64_t ob = o[0].as_int(ctx + " data_offsets"), oe = o[1].as_int(ctx + " data_offsets");
    if (ob < 0 || oe < ob)
      throw InvalidArgument(ctx + ": invalid data_offsets [" + std::to_string(ob) + ", " + std::to_string(oe) + "]");
    t.begin = static_cast<uint64_t>(ob);
    t.end = static_cast<uint64_t>(oe);
    if (t.end > data_size)
      throw InvalidArgument(ctx + ": data_offsets [" + std::to_string(ob) + ", " + std::to_string(oe) +
                            ") out of range: the data section holds " + std::to_string(data_size) +
                            " bytes (truncated file?)");
    const uint64_t want = count * st_dtype_size(t.dtype);
    if (t.end - t.begin != want)
      throw InvalidArgument(ctx + ": shape/size mismatch: " + std::to_string(count) + " x " +
                            st_dtype_name(t.dtype) + " needs " + std::to_string(want) + " bytes, data_offsets span " +
                            std::to_string(t.end - t.begin));
    f.tensors_.push_back(std::move(t));
  }
  std::vector<const TensorInfo*> order;
  for (const auto& t : f.tensors_) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](auto* a, auto* c) {
    return a->begin != c->begin ? a->begin < c->begin : a->end < c->end;
  });
  uint64_t cursor = 0;
  for (const TensorInfo* t : order) {
    if (t->begin < cursor)
      throw InvalidArgument(what + ": tensor \"" + t->name + "\" overlaps the previous tensor (offset " +
                            std::to_string(t->begin) + " < " + std::to_string(cursor) + ")");
    if (t->begin > cursor)
      throw InvalidArgument(what + ": hole in the data section before tensor \"" + t->name + "\" (bytes [" +
                            std::to_string(cursor) + ", " + std::to_string(t->begin) + ") not indexed)");
    cursor = t->end;
  }
  if (cursor != data_size)
    throw InvalidArgument(what + ": data section holds " + std::to_string(data_size) + " bytes but tensors cover " +
                          std::to_string(cursor) + " (trailing bytes or truncated file)");
  return f;
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

std::vector<float> SafetensorsFile::read_f32(const std::string& name,
                                             const std::vector<int64_t>& expected_shape) const {
  const TensorInfo* t = find(name);
  if (!t) throw InvalidArgument(path_ + ": tensor \"" + name + "\" missing");
  if (!expected_shape.empty() && t->shape != expected_shape) {
    auto str = [](const std::vector<int64_t>& s) {
      std::string r = "[";
      for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
      return r + "]";
    };
    throw InvalidArgument(path_ + ": tensor \"" + name + "\" has shape " + str(t->shape) + ", expected " +
                          str(expected_shape));
  }
  const size_t n = static_cast<size_t>(t->numel());
  std::vector<float> out(n);
  const uint8_t* p = data(*t);
  switch (t->dtype) {
    case StDType::F32:
      for (size_t i = 0; i < n; ++i) {
        uint32_t u = 0;
        for (int k = 3; k >= 0; --k) u = (u << 8) | p[4 * i + static_cast<size_t>(k)];
        out[i] = f32_from_bits(u);
      }
      break;
    case StDType::F16:
      for (size_t i = 0; i < n; ++i) out[i] = fp16_bits_to_f32(static_cast<uint16_t>(p[2 * i] | (p[2 * i + 1] << 8)));
      break;
    case StDType::BF16:
      for (size_t i = 0; i < n; ++i) out[i] = bf16_bits_to_f32(static_cast<uint16_t>(p[2 * i] | (p[2 * i + 1] << 8)));
      break;
    case StDType::F64:
      for (size_t i = 0; i < n; ++i) {
        uint64_t u = 0;
        for (int k = 7; k >= 0; --k) u = (u << 8) | p[8 * i + static_cast<size_t>(k)];
        double d;
        std::memcpy(&d, &u, sizeof d);
        out[i] = static_cast<float>(d);
      }
      break;
    default:
      throw InvalidArgument(path_ + ": tensor \"" + name + "\" has dtype " + st_dtype_name(t->dtype) +
                            ", expected a floating-point dtype (F32, F16, BF16, F64)");
  }
  return out;
}

TensorData make_tensor(const std::string& name, StDType dtype, const std::vector<int64_t>& shape,
                       const std::vector<float>& values) {
  TensorData t{name, dtype, shape, {}};
  int64_t n = 1;
  for (auto s : shape) n *= s;
  if (n != static_cast<int64_t>(values.size()))
    throw InvalidArgument("make_tensor \"" + name + "\": " + std::to_string(values.size()) +
                          " values for " + std::to_string(n) + " elements");
  for (float v : values) {
    if (dtype == StDType::F32) {
      const uint32_t u = f32_bits(v);
      for (int k = 0; k < 4; ++k) t.bytes.push_back(static_cast<uint8_t>(u >> (8 * k)));
    } else if (dtype == StDType::F16 || dtype == StDType::BF16) {
      const uint16_t u = dtype == StDType::F16 ? f32_to_fp16_bits(v) : f32_to_bf16_bits(v);
      t.bytes.push_back(static_cast<uint8_t>(u & 0xff));
      t.bytes.push_back(static_cast<uint8_t>(u >> 8));
    } else {
      throw InvalidArgument("make_tensor \"" + name + "\": dtype " + st_dtype_name(dtype) + " not supported");
    }
  }
  return t;
}

std::vector<uint8_t> safetensors_bytes(const std::vector<TensorData>& tensors,
                                       const std::map<std::string, std::string>& metadata) {
  std::string h = "{";
  bool first = true;
  if (!metadata.empty()) {
    h += "\"__metadata__\":{";
    bool f2 = true;
    for (const auto& [k, v] : metadata) {  // appended piece by piece (GCC 12's -Wrestrict on "," + str)
      h += f2 ? "" : ",";
      h += json_quote(k);
      h += ':';
      h += json_quote(v);
      f2 = false;
    }
    h += "}";
    first = false;
  }
  uint64_t off = 0;
  for (const auto& t : tensors) {
    h += first ? "" : ",";
    h += json_quote(t.name);
    h += ":{\"dtype\":\"";
    h += st_dtype_name(t.dtype);
    h += "\",\"shape\":[";
    for (size_t i = 0; i < t.shape.size(); ++i) {
      h += i ? "," : "";
      h += std::to_string(t.shape[i]);
    }
    h += "],\"data_offsets\":[";
    h += std::to_string(off);
    h += ',';
    h += std::to_string(off + t.bytes.size());
    h += "]}";
    off += t.bytes.size();
    first = false;
  }
  h += "}";
  while ((8 + h.size()) % 8 != 0) h += ' ';  // align the data section to 8 bytes, as HF does
  std::vector<uint8_t> out;
  const uint64_t n = h.size();
  for (int k = 0; k < 8; ++k) out.push_back(static_cast<uint8_t>(n >> (8 * k)));
  out.insert(out.end(), h.begin(), h.end());
  for (const auto& t : tensors) out.insert(out.end(), t.bytes.begin(), t.bytes.end());
  return out;
}

void write_safetensors(const std::string& path, const std::vector<TensorData>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const auto bytes = safetensors_bytes(tensors, metadata);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw std::runtime_error(path + ": cannot open for writing");
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    if (!out) throw std::runtime_error(path + ": write error");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw std::runtime_error(path + ": cannot rename the temporary file: " + ec.message());
}

Checkpoint Checkpoint::open(const std::string& dir) {
  namespace fs = std::filesystem;
  Checkpoint c;
  c.dir_ = dir;
  const fs::path single = fs::path(dir) / "model.safetensors";
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  std::error_code ec;
  if (fs::exists(single, ec)) {
    c.files_.push_back(std::make_shared<SafetensorsFile>(SafetensorsFile::open(single.string())));
    for (const auto& t : c.files_[0]->tensors()) c.where_[t.name] = 0;
    return c;
  }
  if (!fs::exists(index, ec))
    throw InvalidArgument(dir + ": no model.safetensors or model.safetensors.index.json in this folder");
  const auto raw = read_all(index.string());
  const Json j = Json::parse(std::string_view(reinterpret_cast<const char*>(raw.data()), raw.size()), index.string());
  const Json* wm = j.find("weight_map");
  if (!wm) throw InvalidArgument(index.string() + ": no \"weight_map\" object");
  std::map<std::string, size_t> shard_index;
  for (const auto& [name, file] : wm->as_object(index.string() + ": weight_map")) {
    const std::string& shard = file.as_string(index.string() + ": weight_map." + name);
    if (shard.empty() || shard.find('/') != std::string::npos || shard.find('\\') != std::string::npos ||
        shard == "." || shard == "..")
      throw InvalidArgument(index.string() + ": shard name \"" + shard + "\" for tensor \"" + name +
                            "\" must be a plain file name in the checkpoint folder");
    auto it = shard_index.find(shard);
    if (it == shard_index.end()) {
      c.files_.push_back(std::make_shared<SafetensorsFile>(SafetensorsFile::open((fs::path(dir) / shard).string())));
      it = shard_index.emplace(shard, c.files_.size() - 1).first;
    }
    if (!c.files_[it->second]->find(name))
      throw InvalidArgument(index.string() + ": tensor \"" + name + "\" is mapped to " + shard +
                            " but that shard does not hold it");
    c.where_[name] = it->second;
  }
  return c;
}

const TensorInfo& Checkpoint::info(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) throw InvalidArgument(dir_ + ": checkpoint has no tensor \"" + name + "\"");
  return *files_[it->second]->find(name);
}

std::vector<float> Checkpoint::read_f32(const std::string& name, const std::vector<int64_t>& expected_shape) const {
  auto it = where_.find(name);
  if (it == where_.end()) throw InvalidArgument(dir_ + ": checkpoint has no tensor \"" + name + "\"");
  return files_[it->second]->read_f32(name, expected_shape);
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> n;
  for (const auto& [k, v] : where_) n.push_back(k);
  return n;
}

}  // namespace resa::sim
