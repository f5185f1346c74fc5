// resa/sim/safetensors.h — reader and writer of the safetensors format
// (https://github.com/huggingface/safetensors): 8-byte little-endian header length N, N bytes of
// JSON header {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}},
// then the raw little-endian data. The reader validates everything before use: header length
// within the file, JSON well-formed, known dtypes, shape x itemsize == byte span, offsets inside
// the data section, no overlaps and no holes (the format requires a fully indexed buffer).
// Also the sharded-checkpoint index (model.safetensors.index.json).
// Tested by tests/sim/test_safetensors.cpp (round trips, every corruption class, random fuzz).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace resa::sim {

enum class StDType { BOOL, U8, I8, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64 };
const char* st_dtype_name(StDType t);
size_t st_dtype_size(StDType t);
StDType st_dtype_parse(const std::string& name, const std::string& what);  // throws on unknown

struct TensorInfo {
  std::string name;
  StDType dtype = StDType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets relative to the data section
  int64_t numel() const;
};

// One safetensors file, read fully into memory and validated on open.
class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::string& path);  // throws InvalidArgument naming the file
  // Parse from bytes (the same validation); `what` names the source in errors.
  static SafetensorsFile from_bytes(std::vector<uint8_t> bytes, const std::string& what);

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const TensorInfo* find(const std::string& name) const;
  // Tensor `name` converted to fp32 (F32, F16, BF16 exactly; F64 rounded). Throws when absent,
  // of another dtype class, or when `expected_shape` (if non-empty) differs.
  std::vector<float> read_f32(const std::string& name, const std::vector<int64_t>& expected_shape = {}) const;
  const uint8_t* data(const TensorInfo& t) const { return bytes_.data() + data_start_ + t.begin; }

 private:
  std::string path_;
  std::vector<uint8_t> bytes_;
  size_t data_start_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// A tensor to write: raw little-endian bytes of `dtype` (size must match the shape).
struct TensorData {
  std::string name;
  StDType dtype = StDType::F32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};
// fp32 values converted to dtype F32, F16 or BF16 (round to nearest even).
TensorData make_tensor(const std::string& name, StDType dtype, const std::vector<int64_t>& shape,
                       const std::vector<float>& values);
std::vector<uint8_t> safetensors_bytes(const std::vector<TensorData>& tensors,
                                       const std::map<std::string, std::string>& metadata = {});
// Writes atomically (temporary file, then rename); throws std::runtime_error naming the path.
void write_safetensors(const std::string& path, const std::vector<TensorData>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// A checkpoint folder: model.safetensors, or model.safetensors.index.json with its shards.
class Checkpoint {
 public:
  static Checkpoint open(const std::string& dir);  // throws InvalidArgument naming the file
  bool has(const std::string& name) const { return where_.count(name) != 0; }
  std::vector<float> read_f32(const std::string& name, const std::vector<int64_t>& expected_shape) const;
  const TensorInfo& info(const std::string& name) const;
  std::vector<std::string> names() const;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> where_;  // tensor -> index into files_
};

}  // namespace resa::sim
