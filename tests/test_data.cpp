// The test data ships with the repository (tests/data): every file the suite reads is listed with its sha256
// in tests/data/SHA256SUMS, and every file there is listed, so a partial checkout or a changed fixture fails
// here by name instead of as a confusing mismatch in the test that reads it.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "common/sha256.h"
#include "test_util.h"

namespace fs = std::filesystem;

TEST(TestData, EveryFileMatchesItsChecksum) {
  const fs::path root = fp4lab::test::data_dir();
  std::ifstream sums(root / "SHA256SUMS");
  ASSERT_TRUE(sums) << (root / "SHA256SUMS").string() << " is missing: the test data is not in this checkout";
  std::set<std::string> listed;
  std::string line;
  while (std::getline(sums, line)) {
    if (line.empty()) continue;
    std::istringstream in(line);
    std::string want, name;
    in >> want >> name;
    ASSERT_EQ(want.size(), 64u) << "malformed SHA256SUMS line: " << line;
    listed.insert(name);
    const fs::path p = root / name;
    if (!fs::exists(p)) {
      ADD_FAILURE() << "tests/data/" << name << " is missing";
      continue;
    }
    EXPECT_EQ(fp4lab::sha256_file_hex(p.string()), want) << "tests/data/" << name << " changed";
  }
  EXPECT_GT(listed.size(), 20u);
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (!e.is_regular_file()) continue;
    const std::string rel = fs::relative(e.path(), root).string();
    if (rel == "SHA256SUMS" || rel.ends_with("README.md")) continue;
    EXPECT_TRUE(listed.count(rel)) << "tests/data/" << rel << " is not listed in tests/data/SHA256SUMS";
  }
}
