// h5.cpp — HDF5 RAII wrapper (see h5.h).
#include "resa/analysis/h5.h"

#include <hdf5_hl.h>

#include <filesystem>

namespace resa::h5 {

void Id::reset() {
  if (id_ < 0) return;
  switch (H5Iget_type(id_)) {
    case H5I_FILE: H5Fclose(id_); break;
    case H5I_GROUP: H5Gclose(id_); break;
    case H5I_DATASET: H5Dclose(id_); break;
    case H5I_DATASPACE: H5Sclose(id_); break;
    case H5I_DATATYPE: H5Tclose(id_); break;
    case H5I_ATTR: H5Aclose(id_); break;
    case H5I_GENPROP_LST: H5Pclose(id_); break;
    default: H5Idec_ref(id_); break;
  }
  id_ = H5I_INVALID_HID;
}

void silence_errors() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

namespace {
herr_t walk_cb(unsigned n, const H5E_error2_t* e, void* data) {
  auto* out = static_cast<std::string*>(data);
  if (n == 0 && e->desc) *out = e->desc;  // innermost entry
  if (n == 0 && out->empty() && e->func_name) *out = e->func_name;
  return 0;
}
std::string innermost() {
  std::string msg;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, walk_cb, &msg);
  H5Eclear2(H5E_DEFAULT);
  return msg;
}
}  // namespace

std::string describe(hid_t loc) {
  std::string file = "?", obj;
  if (loc >= 0) {
    const ssize_t nf = H5Fget_name(loc, nullptr, 0);
    if (nf > 0) {
      file.assign(static_cast<size_t>(nf), '\0');
      H5Fget_name(loc, file.data(), static_cast<size_t>(nf) + 1);
    }
    const ssize_t no = H5Iget_name(loc, nullptr, 0);
    if (no > 0) {
      obj.assign(static_cast<size_t>(no), '\0');
      H5Iget_name(loc, obj.data(), static_cast<size_t>(no) + 1);
    }
  }
  H5Eclear2(H5E_DEFAULT);
  return obj.empty() ? file : file + ":" + obj;
}

void fail(hid_t loc, const std::string& what) {
  const std::string inner = innermost();
  throw Error(describe(loc) + ": " + what + (inner.empty() ? "" : " (HDF5: " + inner + ")"));
}

namespace {
[[noreturn]] void fail_path(const std::string& path, const std::string& what) {
  const std::string inner = innermost();
  throw Error(path + ": " + what + (inner.empty() ? "" : " (HDF5: " + inner + ")"));
}
}  // namespace

Id create_file(const std::string& path, bool truncate) {
  silence_errors();
  const hid_t f = H5Fcreate(path.c_str(), truncate ? H5F_ACC_TRUNC : H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT);
  if (f < 0) fail_path(path, truncate ? "cannot create the file" : "cannot create the file (does it exist?)");
  return Id(f);
}

Id open_file(const std::string& path, bool writable) {
  silence_errors();
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw Error(path + ": no such file");
  if (H5Fis_hdf5(path.c_str()) <= 0) {
    H5Eclear2(H5E_DEFAULT);
    throw Error(path + ": not an HDF5 file (or damaged)");
  }
  const hid_t f = H5Fopen(path.c_str(), writable ? H5F_ACC_RDWR : H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) fail_path(path, writable ? "cannot open for writing" : "cannot open");
  return Id(f);
}

void flush(hid_t file) {
  if (H5Fflush(file, H5F_SCOPE_GLOBAL) < 0) fail(file, "flush failed");
}

bool exists(hid_t loc, const std::string& path) {
  size_t pos = 0;
  while (true) {
    const size_t next = path.find('/', pos + 1);
    const std::string prefix = path.substr(0, next);
    const htri_t e = H5Lexists(loc, prefix.c_str(), H5P_DEFAULT);
    if (e < 0) fail(loc, "cannot check whether \"" + prefix + "\" exists");
    if (e == 0) return false;
    if (next == std::string::npos) return true;
    pos = next;
  }
}

Id create_group(hid_t loc, const std::string& name) {
  const hid_t g = H5Gcreate2(loc, name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  if (g < 0) fail(loc, "cannot create group \"" + name + "\"");
  return Id(g);
}
Id open_group(hid_t loc, const std::string& name) {
  const hid_t g = H5Gopen2(loc, name.c_str(), H5P_DEFAULT);
  if (g < 0) fail(loc, "cannot open group \"" + name + "\"");
  return Id(g);
}
Id open_dataset(hid_t loc, const std::string& name) {
  const hid_t d = H5Dopen2(loc, name.c_str(), H5P_DEFAULT);
  if (d < 0) fail(loc, "cannot open dataset \"" + name + "\"");
  return Id(d);
}
void unlink(hid_t loc, const std::string& name) {
  if (H5Ldelete(loc, name.c_str(), H5P_DEFAULT) < 0) fail(loc, "cannot delete \"" + name + "\"");
}

namespace {
herr_t list_cb(hid_t, const char* name, const H5L_info_t*, void* data) {
  static_cast<std::vector<std::string>*>(data)->emplace_back(name);
  return 0;
}
Id string_type() {
  Id t(H5Tcopy(H5T_C_S1));
  H5Tset_size(t, H5T_VARIABLE);
  H5Tset_cset(t, H5T_CSET_UTF8);
  return t;
}
}  // namespace

std::vector<std::string> list_children(hid_t group) {
  std::vector<std::string> names;
  if (H5Literate(group, H5_INDEX_NAME, H5_ITER_INC, nullptr, list_cb, &names) < 0) fail(group, "cannot list members");
  return names;
}

namespace {
template <class Writer>
void put_attr(hid_t obj, const std::string& name, hid_t type, Writer&& write) {
  if (H5Aexists(obj, name.c_str()) > 0 && H5Adelete(obj, name.c_str()) < 0)
    fail(obj, "cannot replace attribute \"" + name + "\"");
  Id space(H5Screate(H5S_SCALAR));
  Id a(H5Acreate2(obj, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT));
  if (a.get() < 0 || write(a.get()) < 0) fail(obj, "cannot write attribute \"" + name + "\"");
}
}  // namespace

void set_attr(hid_t obj, const std::string& name, const std::string& value) {
  Id t = string_type();
  const char* p = value.c_str();
  put_attr(obj, name, t, [&](hid_t a) { return H5Awrite(a, t, &p); });
}
void set_attr(hid_t obj, const std::string& name, int64_t value) {
  put_attr(obj, name, H5T_STD_I64LE, [&](hid_t a) { return H5Awrite(a, H5T_NATIVE_INT64, &value); });
}
void set_attr(hid_t obj, const std::string& name, double value) {
  put_attr(obj, name, H5T_IEEE_F64LE, [&](hid_t a) { return H5Awrite(a, H5T_NATIVE_DOUBLE, &value); });
}
bool has_attr(hid_t obj, const std::string& name) {
  const htri_t e = H5Aexists(obj, name.c_str());
  if (e < 0) fail(obj, "cannot check attribute \"" + name + "\"");
  return e > 0;
}
std::string attr_string(hid_t obj, const std::string& name) {
  Id a(H5Aopen(obj, name.c_str(), H5P_DEFAULT));
  if (a.get() < 0) fail(obj, "missing attribute \"" + name + "\"");
  Id t = string_type();
  char* p = nullptr;
  if (H5Aread(a, t, &p) < 0) fail(obj, "attribute \"" + name + "\" is not a string");
  std::string s = p ? p : "";
  H5free_memory(p);
  return s;
}
int64_t attr_int(hid_t obj, const std::string& name) {
  Id a(H5Aopen(obj, name.c_str(), H5P_DEFAULT));
  int64_t v = 0;
  if (a.get() < 0 || H5Aread(a, H5T_NATIVE_INT64, &v) < 0) fail(obj, "cannot read integer attribute \"" + name + "\"");
  return v;
}
double attr_double(hid_t obj, const std::string& name) {
  Id a(H5Aopen(obj, name.c_str(), H5P_DEFAULT));
  double v = 0;
  if (a.get() < 0 || H5Aread(a, H5T_NATIVE_DOUBLE, &v) < 0) fail(obj, "cannot read attribute \"" + name + "\"");
  return v;
}

void write_string(hid_t loc, const std::string& name, const std::string& value) {
  Id t = string_type();
  Id space(H5Screate(H5S_SCALAR));
  Id ds(H5Dcreate2(loc, name.c_str(), t, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  const char* p = value.c_str();
  if (ds.get() < 0 || H5Dwrite(ds, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, &p) < 0)
    fail(loc, "cannot write string dataset \"" + name + "\"");
}
std::string read_string(hid_t loc, const std::string& name) {
  Id ds = open_dataset(loc, name);
  Id t = string_type();
  char* p = nullptr;
  if (H5Dread(ds, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, &p) < 0) fail(ds, "cannot read as a string");
  std::string s = p ? p : "";
  H5free_memory(p);
  return s;
}

template <> hid_t native_type<double>() { return H5T_NATIVE_DOUBLE; }
template <> hid_t native_type<float>() { return H5T_NATIVE_FLOAT; }
template <> hid_t native_type<int32_t>() { return H5T_NATIVE_INT32; }
template <> hid_t native_type<int64_t>() { return H5T_NATIVE_INT64; }
template <> hid_t native_type<uint8_t>() { return H5T_NATIVE_UINT8; }
namespace {
template <class T> hid_t file_type();
template <> hid_t file_type<double>() { return H5T_IEEE_F64LE; }
template <> hid_t file_type<float>() { return H5T_IEEE_F32LE; }
template <> hid_t file_type<int32_t>() { return H5T_STD_I32LE; }
template <> hid_t file_type<int64_t>() { return H5T_STD_I64LE; }
template <> hid_t file_type<uint8_t>() { return H5T_STD_U8LE; }
}  // namespace

template <class T>
Series<T>::Series(hid_t loc, const std::string& name, const std::vector<hsize_t>& inner, hsize_t chunk_steps,
                  const std::string& description)
    : inner_(inner) {
  std::vector<hsize_t> dims{0}, maxd{H5S_UNLIMITED}, chunk{chunk_steps};
  for (auto n : inner) dims.push_back(n), maxd.push_back(n), chunk.push_back(n);
  Id space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), maxd.data()));
  Id dcpl(H5Pcreate(H5P_DATASET_CREATE));
  if (H5Pset_chunk(dcpl, static_cast<int>(chunk.size()), chunk.data()) < 0 || H5Pset_shuffle(dcpl) < 0 ||
      H5Pset_deflate(dcpl, 4) < 0)
    fail(loc, "cannot set chunking/compression for \"" + name + "\"");
  ds_ = Id(H5Dcreate2(loc, name.c_str(), file_type<T>(), space, H5P_DEFAULT, dcpl, H5P_DEFAULT));
  if (ds_.get() < 0) fail(loc, "cannot create dataset \"" + name + "\"");
  if (!description.empty()) set_attr(ds_, "description", description);
}

template <class T>
void Series<T>::append(const T* rows, hsize_t n) {
  if (n == 0) return;
  std::vector<hsize_t> dims{steps_ + n}, start{steps_}, count{n};
  for (auto s : inner_) dims.push_back(s), start.push_back(0), count.push_back(s);
  if (H5Dset_extent(ds_, dims.data()) < 0) fail(ds_, "cannot extend");
  Id fs(H5Dget_space(ds_));
  Id ms(H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr));
  if (H5Sselect_hyperslab(fs, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr) < 0 ||
      H5Dwrite(ds_, native_type<T>(), ms, fs, H5P_DEFAULT, rows) < 0)
    fail(ds_, "cannot append " + std::to_string(n) + " steps");
  steps_ += n;
}

template <class T>
Id write_vector(hid_t loc, const std::string& name, const std::vector<T>& values) {
  const hsize_t n = values.size();
  Id space(H5Screate_simple(1, &n, nullptr));
  Id ds(H5Dcreate2(loc, name.c_str(), file_type<T>(), space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  if (ds.get() < 0 || (n && H5Dwrite(ds, native_type<T>(), H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()) < 0))
    fail(loc, "cannot write dataset \"" + name + "\"");
  return ds;
}

template <class T>
std::vector<T> read_all(hid_t loc, const std::string& name, std::vector<hsize_t>* dims) {
  Id ds = open_dataset(loc, name);
  Id space(H5Dget_space(ds));
  const int rank = H5Sget_simple_extent_ndims(space);
  if (rank < 0) fail(ds, "cannot read the shape");
  std::vector<hsize_t> d(static_cast<size_t>(rank));
  H5Sget_simple_extent_dims(space, d.data(), nullptr);
  size_t n = 1;
  for (auto x : d) n *= static_cast<size_t>(x);
  std::vector<T> out(n);
  if (n && H5Dread(ds, native_type<T>(), H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) < 0) fail(ds, "cannot read");
  if (dims) *dims = d;
  return out;
}

void make_scale(hid_t scale, const std::string& name) {
  if (H5DSset_scale(scale, name.c_str()) < 0) fail(scale, "cannot make a dimension scale");
}
void attach_scale(hid_t ds, hid_t scale, unsigned dim) {
  if (H5DSattach_scale(ds, scale, dim) < 0) fail(ds, "cannot attach dimension scale to axis " + std::to_string(dim));
}

template class Series<double>;
template class Series<float>;
template class Series<int32_t>;
template class Series<int64_t>;
template class Series<uint8_t>;
template Id write_vector<int32_t>(hid_t, const std::string&, const std::vector<int32_t>&);
template Id write_vector<int64_t>(hid_t, const std::string&, const std::vector<int64_t>&);
template Id write_vector<double>(hid_t, const std::string&, const std::vector<double>&);
template std::vector<double> read_all<double>(hid_t, const std::string&, std::vector<hsize_t>*);
template std::vector<int32_t> read_all<int32_t>(hid_t, const std::string&, std::vector<hsize_t>*);
template std::vector<int64_t> read_all<int64_t>(hid_t, const std::string&, std::vector<hsize_t>*);
template std::vector<uint8_t> read_all<uint8_t>(hid_t, const std::string&, std::vector<hsize_t>*);

void insert_string_member(hid_t compound, const char* name, size_t offset, size_t size) {
  Id s(H5Tcopy(H5T_C_S1));
  if (s.get() < 0 || H5Tset_size(s, size) < 0 || H5Tset_strpad(s, H5T_STR_NULLTERM) < 0 ||
      H5Tinsert(compound, name, offset, s) < 0)
    throw Error(std::string("cannot add the string member '") + name + "' to a compound type");
}

}  // namespace resa::h5
