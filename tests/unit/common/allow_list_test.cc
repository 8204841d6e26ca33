#include "common/allow_list.h"

#include <gtest/gtest.h>

namespace loom {
namespace {

using Kind = AllowRefusal::Kind;

TEST(AllowListTest, TheOwnerAndListedUsersMaySubmitOthersMayNot) {
  AllowList list{.endpoint_id = "gpu-1", .owner = "alice", .users = {"bob"}};
  EXPECT_FALSE(CheckAllowList(list, "alice", "echo", "alice"));
  EXPECT_FALSE(CheckAllowList(list, "bob", "echo", "alice"));
  auto no = CheckAllowList(list, "mallory", "echo", "alice");
  ASSERT_TRUE(no);
  EXPECT_EQ(no->kind, Kind::kUser);
  EXPECT_EQ(no->message, "endpoint 'gpu-1' does not accept tasks of user 'mallory'");
  // A task that names no user is nobody's: refused.
  ASSERT_TRUE(CheckAllowList(list, "", "echo", "alice"));
  EXPECT_EQ(CheckAllowList(list, "", "echo", "alice")->kind, Kind::kUser);
}

TEST(AllowListTest, StarAdmitsEveryUser) {
  AllowList list{.endpoint_id = "shared", .owner = "alice", .users = {"*"}};
  EXPECT_FALSE(CheckAllowList(list, "anyone", "echo", "anyone"));
}

TEST(AllowListTest, ABareFunctionNameIsTheOwnersAndUserSlashNameAnothers) {
  AllowList list{.endpoint_id = "gpu-1", .owner = "alice", .users = {"*"}, .functions = {"echo", "bob/add"}};
  EXPECT_FALSE(CheckAllowList(list, "carol", "echo", "alice"));
  EXPECT_FALSE(CheckAllowList(list, "carol", "add", "bob"));
  auto theirs = CheckAllowList(list, "carol", "echo", "bob");  // bob's echo is not alice's
  ASSERT_TRUE(theirs);
  EXPECT_EQ(theirs->kind, Kind::kFunction);
  EXPECT_EQ(theirs->message, "endpoint 'gpu-1' does not accept tasks of function 'bob/echo'");
  EXPECT_EQ(CheckAllowList(list, "alice", "add", "alice")->kind, Kind::kFunction);
  EXPECT_EQ(CheckAllowList(list, "alice", "crash", "")->message,
            "endpoint 'gpu-1' does not accept tasks of function 'crash'");
}

TEST(AllowListTest, TheUserIsCheckedBeforeTheFunction) {
  AllowList list{.endpoint_id = "e", .owner = "alice", .functions = {"echo"}};
  EXPECT_EQ(CheckAllowList(list, "mallory", "crash", "mallory")->kind, Kind::kUser);
}

TEST(AllowListTest, MalformedEntriesAreRefused) {
  EXPECT_TRUE(ValidateAllowList({"bob", "*"}, {"echo", "bob/add"}).ok());
  EXPECT_EQ(ValidateAllowList({""}, {}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateAllowList({"a/b"}, {}).code(), StatusCode::kInvalidArgument);
  for (const char* bad : {"", "/", "bob/", "/add", "a/b/c"}) {
    Status s = ValidateAllowList({}, {bad});
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace loom
