// tests/test_config.cpp — exact ratio parsing, n_sel against hand-computed cases, parameter
// validation and schedule construction.
#include <gtest/gtest.h>

#include "resa/config.h"
#include "resa/schedule.h"

namespace resa {
namespace {

TEST(Fraction, ParsesDecimalsAndFractionsExactly) {
  EXPECT_EQ(Fraction::parse("0.1"), (Fraction{1, 10}));
  EXPECT_EQ(Fraction::parse(".05"), (Fraction{1, 20}));
  EXPECT_EQ(Fraction::parse("1/20"), (Fraction{1, 20}));
  EXPECT_EQ(Fraction::parse("2/20"), (Fraction{1, 10}));
  EXPECT_EQ(Fraction::parse("1"), (Fraction{1, 1}));
  EXPECT_EQ(Fraction::parse("1.0"), (Fraction{1, 1}));
  EXPECT_EQ(Fraction::parse("0.125"), (Fraction{1, 8}));
  EXPECT_EQ(Fraction::parse("0.2"), (Fraction{1, 5}));
  EXPECT_EQ(Fraction::parse("0.3").str(), "3/10");
}

TEST(Fraction, RejectsMalformedTextNamingIt) {
  for (const char* bad : {"", ".", "abc", "1/0", "0.1.2", "-0.1", "1e-1", "1/", "/3", "0.1234567890123"}) {
    try {
      Fraction::parse(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("ratio"), std::string::npos) << e.what();
    }
  }
}

TEST(Fraction, CeilingIsExactWhereFloatIsNot) {
  // ceil(0.1f * 30) is 3 in fp32 and 4 in fp64; the exact value is 3.
  EXPECT_EQ(Fraction::parse("0.1").ceil_times(30), 3);
  EXPECT_EQ(Fraction::parse("0.1").ceil_times(31), 4);
  EXPECT_EQ(Fraction::parse("0.1").ceil_times(160), 16);
  EXPECT_EQ(Fraction::parse("0.1").ceil_times(161), 17);
  EXPECT_EQ(Fraction::parse("1/20").ceil_times(1), 1);
}

struct NSelCase {
  int64_t length;
  int b;
  const char* ratio;
  int n_min;
  int64_t blocks, selected;
};

TEST(NumSelected, HandComputedTable) {
  const NSelCase cases[] = {
      // L <= 256 with the defaults: every block selected (dense).
      {1, 16, "0.1", 16, 1, 1},
      {16, 16, "0.1", 16, 1, 1},
      {17, 16, "0.1", 16, 2, 2},
      {255, 16, "0.1", 16, 16, 16},
      {256, 16, "0.1", 16, 16, 16},
      {257, 16, "0.1", 16, 17, 16},   // ceil(1.7) = 2 < 16 = min(17, 16)
      // L = 2560: M = 160, ratio * M = 16 exactly (integral).
      {2560, 16, "0.1", 16, 160, 16},
      {2561, 16, "0.1", 16, 161, 17},  // ceil(16.1) = 17
      {4800, 16, "0.1", 0, 300, 30},   // ratio * M integral: exactly 30
      {480, 16, "0.1", 0, 30, 3},      // the fp32/fp64 ceiling trap: exact 3
      {496, 16, "0.1", 0, 31, 4},
      {65536, 16, "1/20", 16, 4096, 205},  // ceil(204.8)
      {65536, 16, "1/5", 16, 4096, 820},   // ceil(819.2)
      {65536, 64, "0.1", 16, 1024, 103},   // ceil(102.4)
      {1000, 16, "1", 16, 63, 63},         // ratio 1: everything
      {100, 16, "1/50", 0, 7, 1},          // ceil(0.14) = 1
  };
  for (const NSelCase& c : cases) {
    SparseConfig cfg;
    cfg.block_size = c.b;
    cfg.ratio = Fraction::parse(c.ratio);
    cfg.n_min = c.n_min;
    EXPECT_EQ(num_blocks(c.length, c.b), c.blocks) << "L=" << c.length;
    EXPECT_EQ(num_selected(c.length, cfg), c.selected)
        << "L=" << c.length << " b=" << c.b << " ratio=" << c.ratio << " n_min=" << c.n_min;
  }
}

TEST(SparseConfig, DefaultsAreThePapers) {
  SparseConfig cfg;
  EXPECT_EQ(cfg.block_size, 16);
  EXPECT_EQ(cfg.ratio, (Fraction{1, 10}));
  EXPECT_EQ(cfg.n_min, 16);
  EXPECT_EQ(cfg.n_local, 1);
  EXPECT_EQ(cfg.n_sink, 0);
  EXPECT_EQ(cfg.rectify_every, 32);
  EXPECT_NO_THROW(cfg.validate());
  EXPECT_NEAR(cost_model_fraction(cfg), 1.0 / 16 + 0.1 + 1.0 / 32, 1e-15);  // 0.194
  EXPECT_EQ(cfg.str(), "b=16 ratio=1/10 n_min=16 n_local=1 n_sink=0 f=32");
}

void expect_invalid(const SparseConfig& cfg, const std::string& field) {
  try {
    cfg.validate();
    ADD_FAILURE() << "accepted " << cfg.str();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
  }
}

TEST(SparseConfig, BadParametersAreRejectedWithTheFieldNamed) {
  SparseConfig c;
  c.block_size = 12;
  expect_invalid(c, "block_size");
  c = {};
  c.block_size = 0;
  expect_invalid(c, "block_size");
  c = {};
  c.block_size = 1024;
  expect_invalid(c, "block_size");
  c = {};
  c.ratio = Fraction{0, 1};
  expect_invalid(c, "ratio");
  c = {};
  c.ratio = Fraction{11, 10};
  expect_invalid(c, "ratio");
  c = {};
  c.rectify_every = -1;
  expect_invalid(c, "rectify_every");
  c = {};
  c.n_local = 0;
  expect_invalid(c, "n_local");
  c = {};
  c.n_sink = -2;
  expect_invalid(c, "n_sink");
  c = {};
  c.n_min = -1;
  expect_invalid(c, "n_min");
  EXPECT_THROW(num_blocks(0, 16), InvalidArgument);
}

TEST(Schedule, IsAPureFunctionOfShapeAndConfig) {
  const AttentionShape a{12, 2, 128}, b{28, 4, 128};
  const Schedule sa = make_schedule(a), sb = make_schedule(b);
  EXPECT_EQ(sa.split_len, 512);
  EXPECT_EQ(sa.key_tile, 64);
  EXPECT_EQ(sa.str(), make_schedule(a).str());
  EXPECT_EQ(sa.scale_log2, sb.scale_log2);  // same head dim
  EXPECT_EQ(sa.scale_log2, static_cast<float>(1.4426950408889634 / std::sqrt(128.0)));
  EXPECT_EQ(sa.num_splits(1), 1);
  EXPECT_EQ(sa.num_splits(512), 1);
  EXPECT_EQ(sa.num_splits(513), 2);
}

TEST(Schedule, RejectsUnsupportedShapesAndTilings) {
  EXPECT_THROW(make_schedule({12, 2, 96}), InvalidArgument);   // head dim
  EXPECT_THROW(make_schedule({12, 5, 128}), InvalidArgument);  // Hq not a multiple of Hkv
  EXPECT_THROW(make_schedule({18, 2, 128}), InvalidArgument);  // group 9
  EXPECT_THROW(make_schedule({12, 0, 128}), InvalidArgument);
  EXPECT_THROW(make_schedule({12, 2, 128}, {500, 64}), InvalidArgument);
  EXPECT_THROW(make_schedule({12, 2, 128}, {512, 24}), InvalidArgument);
  EXPECT_NO_THROW(make_schedule({8, 1, 64}));
  const Schedule s = make_schedule({12, 2, 128});
  EXPECT_THROW(check_block_fits_schedule(1024, s), InvalidArgument);
  EXPECT_NO_THROW(check_block_fits_schedule(512, s));
}

}  // namespace
}  // namespace resa
