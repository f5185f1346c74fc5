// resa/analysis/h5.h — a small RAII wrapper over the HDF5 C API for the study files.
// HDF5's automatic error-stack printing is silenced; every failing call throws h5::Error whose
// message names the file, the object and the innermost HDF5 error.
// Tested by tests/sim/test_study.cpp (round trips, error messages).
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace resa::h5 {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// An owned HDF5 identifier (file, group, dataset, dataspace, type, property list, attribute).
class Id {
 public:
  Id() = default;
  explicit Id(hid_t id) : id_(id) {}
  Id(const Id&) = delete;
  Id& operator=(const Id&) = delete;
  Id(Id&& o) noexcept : id_(o.id_) { o.id_ = H5I_INVALID_HID; }
  Id& operator=(Id&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = o.id_;
      o.id_ = H5I_INVALID_HID;
    }
    return *this;
  }
  ~Id() { reset(); }
  hid_t get() const { return id_; }
  operator hid_t() const { return id_; }
  void reset();

 private:
  hid_t id_ = H5I_INVALID_HID;
};

// Name of the file and path of the object behind `loc`, for messages ("f.h5:/runs/dense").
std::string describe(hid_t loc);
// Throws Error("<file>:<object>: <what>: <innermost HDF5 message>").
[[noreturn]] void fail(hid_t loc, const std::string& what);
// Silence HDF5's automatic error printing (idempotent; called by every opener).
void silence_errors();

Id create_file(const std::string& path, bool truncate);  // fails if it exists and !truncate
Id open_file(const std::string& path, bool writable);
void flush(hid_t file);

bool exists(hid_t loc, const std::string& path);  // every component checked
Id create_group(hid_t loc, const std::string& name);
Id open_group(hid_t loc, const std::string& name);
Id open_dataset(hid_t loc, const std::string& name);
void unlink(hid_t loc, const std::string& name);
std::vector<std::string> list_children(hid_t group);

void set_attr(hid_t obj, const std::string& name, const std::string& value);  // UTF-8 variable-length string
void set_attr(hid_t obj, const std::string& name, int64_t value);
void set_attr(hid_t obj, const std::string& name, double value);
bool has_attr(hid_t obj, const std::string& name);
std::string attr_string(hid_t obj, const std::string& name);
int64_t attr_int(hid_t obj, const std::string& name);
double attr_double(hid_t obj, const std::string& name);

// Scalar UTF-8 string dataset.
void write_string(hid_t loc, const std::string& name, const std::string& value);
std::string read_string(hid_t loc, const std::string& name);

template <class T>
hid_t native_type();  // double, float, int32_t, int64_t, uint8_t

// A dataset [step][inner...] with an unlimited first axis, explicit chunks of `chunk_steps`
// steps, gzip level 4 after the shuffle filter. append() extends it and writes the rows.
template <class T>
class Series {
 public:
  Series() = default;
  Series(hid_t loc, const std::string& name, const std::vector<hsize_t>& inner, hsize_t chunk_steps,
         const std::string& description);
  void append(const T* rows, hsize_t n_steps);
  hid_t id() const { return ds_.get(); }
  hsize_t steps() const { return steps_; }

 private:
  Id ds_;
  std::vector<hsize_t> inner_;
  hsize_t steps_ = 0;
};

// Fixed-size dataset of values (dimension-scale coordinates such as `layer` and `head`).
template <class T>
Id write_vector(hid_t loc, const std::string& name, const std::vector<T>& values);
// Read a whole numeric dataset as T (converted by HDF5); dims receives its shape.
template <class T>
std::vector<T> read_all(hid_t loc, const std::string& name, std::vector<hsize_t>* dims = nullptr);

// Add a fixed-size, NUL-terminated string member of `size` bytes at `offset` to a compound type
// (the summary tables' name/mode/ratio columns).
void insert_string_member(hid_t compound, const char* name, size_t offset, size_t size);

// Make `scale` a dimension scale called `name` and attach it to dimension `dim` of `ds`.
void make_scale(hid_t scale, const std::string& name);
void attach_scale(hid_t ds, hid_t scale, unsigned dim);

}  // namespace resa::h5
