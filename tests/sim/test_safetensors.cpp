// tests/sim/test_safetensors.cpp — the JSON reader and the safetensors reader/writer: round trips
// (F32/F16/BF16, metadata, sharded index), every corruption class with a clear error, and a fuzz
// test over random corruptions that must end in a clean accept or InvalidArgument, never a crash.
// Run: build/main/tests/sim/resa_sim_tests --gtest_filter='Safetensors*:Json*'
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "resa/config.h"
#include "resa/numerics.h"
#include "resa/sim/json.h"
#include "resa/sim/safetensors.h"

namespace resa::sim {
namespace {

namespace fs = std::filesystem;

fs::path temp_dir(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("resa_sim_tests_" + std::to_string(::getpid())) / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

// A header + data written by hand, for corruption cases.
std::vector<uint8_t> raw_file(const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> out;
  const uint64_t n = header.size();
  for (int k = 0; k < 8; ++k) out.push_back(static_cast<uint8_t>(n >> (8 * k)));
  out.insert(out.end(), header.begin(), header.end());
  out.resize(out.size() + data_bytes, 0x3f);
  return out;
}

std::string error_of(const std::vector<uint8_t>& bytes) {
  try {
    SafetensorsFile::from_bytes(bytes, "test.safetensors");
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "";
}

TEST(Json, ParsesAndRejects) {
  const Json j = Json::parse(R"({"a": [1, -2.5e3, true, null], "s": "x\u00e9\n", "big": 9007199254740993})", "t");
  EXPECT_EQ(j.find("a")->as_array("a")[0].as_int("a0"), 1);
  EXPECT_DOUBLE_EQ(j.find("a")->as_array("a")[1].as_double("a1"), -2500.0);
  EXPECT_EQ(j.find("s")->as_string("s"), "x\xc3\xa9\n");
  EXPECT_EQ(j.find("big")->as_int("big"), 9007199254740993ll);  // exact, beyond double precision
  for (const char* bad : {"{", "{\"a\":1,}", "[1 2]", "{\"a\":1,\"a\":2}", "\"\\x\"", "01", "{\"a\":tru}", "1 1",
                          "\"\\ud800\""})
    EXPECT_THROW(Json::parse(bad, "bad"), InvalidArgument) << bad;
  std::string deep(100, '[');
  EXPECT_THROW(Json::parse(deep, "deep"), InvalidArgument);
  EXPECT_THROW(j.find("s")->as_int("s"), InvalidArgument);
}

TEST(Safetensors, RoundTripsEveryFloatDtypeAndMetadata) {
  std::mt19937 rng(3);
  std::normal_distribution<float> n(0.0f, 3.0f);
  std::vector<float> a(6 * 7), b(5), c(2 * 3 * 4);
  for (auto* v : {&a, &b, &c})
    for (auto& x : *v) x = n(rng);
  const auto bytes = safetensors_bytes({make_tensor("w.a", StDType::F32, {6, 7}, a), make_tensor("w.b", StDType::BF16, {5}, b),
                                        make_tensor("w.c", StDType::F16, {2, 3, 4}, c)},
                                       {{"format", "pt"}});
  EXPECT_EQ((bytes[0] | (bytes[1] << 8)) % 8, 0);  // data section 8-byte aligned
  const SafetensorsFile f = SafetensorsFile::from_bytes(bytes, "mem");
  ASSERT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.read_f32("w.a", {6, 7}), a);
  const auto rb = f.read_f32("w.b");
  const auto rc = f.read_f32("w.c", {2, 3, 4});
  for (size_t i = 0; i < b.size(); ++i) EXPECT_EQ(f32_bits(rb[i]), f32_bits(round_through<bf16>(b[i])));
  for (size_t i = 0; i < c.size(); ++i) EXPECT_EQ(f32_bits(rc[i]), f32_bits(round_through<fp16>(c[i])));
  EXPECT_THROW(f.read_f32("w.a", {7, 6}), InvalidArgument);
  EXPECT_THROW(f.read_f32("missing"), InvalidArgument);

  const fs::path dir = temp_dir("roundtrip");
  write_safetensors((dir / "x.safetensors").string(), {make_tensor("t", StDType::F32, {3}, {1.f, -2.f, 0.5f})});
  EXPECT_EQ(SafetensorsFile::open((dir / "x.safetensors").string()).read_f32("t"), (std::vector<float>{1.f, -2.f, 0.5f}));
  EXPECT_THROW(SafetensorsFile::open((dir / "none.safetensors").string()), InvalidArgument);
}

TEST(Safetensors, RejectsEachCorruptionWithAClearMessage) {
  const std::string ok = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[2],"data_offsets":[8,12]}})";
  EXPECT_EQ(error_of(raw_file(ok, 12)), "");
  auto expect = [](const std::vector<uint8_t>& bytes, const std::string& needle) {
    const std::string e = error_of(bytes);
    EXPECT_NE(e.find(needle), std::string::npos) << "message \"" << e << "\" lacks \"" << needle << "\"";
    EXPECT_NE(e.find("test.safetensors"), std::string::npos) << e;
  };
  expect({1, 2, 3}, "truncated");                                     // shorter than the length field
  auto huge = raw_file(ok, 12);
  huge[5] = 0x7f;                                                     // header length ~2^47
  expect(huge, "bad header length");
  auto longer = raw_file(ok, 12);
  longer[0] = static_cast<uint8_t>(longer[0] + 40);                   // header runs past the file
  expect(longer, "truncated");
  expect(raw_file(ok, 10), "out of range");                           // truncated data
  expect(raw_file(ok, 16), "trailing bytes");
  expect(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[2],"data_offsets":[6,10]}})", 10),
         "overlaps");
  expect(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12), "hole");
  expect(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8), "invalid data_offsets");
  expect(raw_file(R"({"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", 8), "unknown dtype");
  expect(raw_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8), "shape/size mismatch");
  expect(raw_file(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8), "negative");
  expect(raw_file(R"({"a":{"dtype":"F32","shape":[2]}})", 8), "data_offsets");
  expect(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})", 8), "malformed JSON");
  expect(raw_file(R"(["a"])", 0), "start with '{'");
  const SafetensorsFile ints =
      SafetensorsFile::from_bytes(raw_file(R"({"a":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})", 8), "i");
  EXPECT_THROW(ints.read_f32("a"), InvalidArgument);  // integer tensors are not weights
}

TEST(Safetensors, FuzzedCorruptionsNeverCrash) {
  std::vector<float> v(64);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i) * 0.25f;
  const auto good = safetensors_bytes({make_tensor("x", StDType::F32, {8, 8}, v), make_tensor("y", StDType::BF16, {4, 4},
                                                                                              std::vector<float>(16, 1.f))},
                                      {{"k", "v"}});
  std::mt19937_64 rng(11);
  int accepted = 0, rejected = 0;
  for (int it = 0; it < 3000; ++it) {
    auto b = good;
    const int kind = static_cast<int>(rng() % 4);
    if (kind == 0) {
      b.resize(rng() % b.size());
    } else if (kind == 1) {
      for (int k = 0, n = 1 + static_cast<int>(rng() % 4); k < n; ++k) b[rng() % b.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
    } else if (kind == 2) {
      const uint64_t hl = b[0] | (b[1] << 8);
      b[8 + rng() % hl] = static_cast<uint8_t>(rng());  // random byte inside the header
    } else {
      b[rng() % 8] = static_cast<uint8_t>(rng());       // the length field
    }
    try {
      const SafetensorsFile f = SafetensorsFile::from_bytes(b, "fuzz");
      for (const auto& t : f.tensors()) {
        try {
          f.read_f32(t.name);
        } catch (const InvalidArgument&) {
        }
      }
      ++accepted;
    } catch (const InvalidArgument&) {
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 1000);  // most corruptions are caught
  EXPECT_GT(accepted, 0);     // flips inside the data section are legal files
}

TEST(Safetensors, ShardedIndexIsValidated) {
  const fs::path dir = temp_dir("sharded");
  write_safetensors((dir / "s1.safetensors").string(), {make_tensor("a", StDType::F32, {2}, {1.f, 2.f})});
  write_safetensors((dir / "s2.safetensors").string(), {make_tensor("b", StDType::F16, {1}, {3.f})});
  auto write_index = [&](const std::string& text) {
    std::ofstream(dir / "model.safetensors.index.json") << text;
  };
  write_index(R"({"metadata":{},"weight_map":{"a":"s1.safetensors","b":"s2.safetensors"}})");
  const Checkpoint ck = Checkpoint::open(dir.string());
  EXPECT_EQ(ck.read_f32("a", {2}), (std::vector<float>{1.f, 2.f}));
  EXPECT_EQ(ck.read_f32("b", {1}), (std::vector<float>{3.f}));
  EXPECT_THROW(ck.read_f32("c", {1}), InvalidArgument);
  write_index(R"({"weight_map":{"a":"s2.safetensors"}})");
  EXPECT_THROW(Checkpoint::open(dir.string()), InvalidArgument);  // mapped to a shard without it
  write_index(R"({"weight_map":{"a":"../s1.safetensors"}})");
  EXPECT_THROW(Checkpoint::open(dir.string()), InvalidArgument);  // outside the folder
  write_index(R"({"weight_map":{"a":"missing.safetensors"}})");
  EXPECT_THROW(Checkpoint::open(dir.string()), InvalidArgument);
  write_index(R"({"weight_map":)");
  EXPECT_THROW(Checkpoint::open(dir.string()), InvalidArgument);
  EXPECT_THROW(Checkpoint::open((dir / "nothing").string()), InvalidArgument);
}

}  // namespace
}  // namespace resa::sim
