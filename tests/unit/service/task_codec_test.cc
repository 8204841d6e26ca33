#include "service/task_codec.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace loom::service {
namespace {

using Stamps = std::vector<std::pair<std::string, int64_t>>;

Stamps Decode(const std::string& encoded) {
  google::protobuf::RepeatedPtrField<v1::Timestamp> out;
  DecodeStamps(encoded, &out);
  Stamps s;
  for (const auto& t : out) s.emplace_back(t.stage(), t.unix_nanos());
  return s;
}

TEST(TaskCodecTest, StampsRoundTripKnownAndOtherStages) {
  const int64_t t0 = 1795815057390789041;
  std::string enc;
  enc += EncodeStamp("received", t0);
  enc += EncodeStamp("waiting-for-endpoint", t0 + 1);
  enc += EncodeStamp("a-stage-without-a-code", t0 + 2);
  enc += EncodeStamp("endpoint_result", t0 + 3);
  enc += EncodeStamp("success", t0 + 4);
  EXPECT_EQ(Decode(enc), (Stamps{{"received", t0},
                                 {"waiting-for-endpoint", t0 + 1},
                                 {"a-stage-without-a-code", t0 + 2},
                                 {"endpoint_result", t0 + 3},
                                 {"success", t0 + 4}}));
  EXPECT_EQ(EncodeStamp("success", t0).size(), 9u);  // a code and 8 bytes
  EXPECT_EQ(Decode(EncodeStamp("zero", 0) + EncodeStamp("negative", -5)), (Stamps{{"negative", -5}, {"zero", 0}}));
}

TEST(TaskCodecTest, StampsAreSortedByTimeKeepingWriteOrderOnTies) {
  std::string enc = EncodeStamp("success", 30) + EncodeStamp("received", 10) + EncodeStamp("retry", 30) +
                    EncodeStamp("dispatched", 20);
  EXPECT_EQ(Decode(enc), (Stamps{{"received", 10}, {"dispatched", 20}, {"success", 30}, {"retry", 30}}));
}

TEST(TaskCodecTest, StampsOfTheEarlierTextFormatAreStillRead) {
  // A task written by an earlier service, then stamped by this one.
  std::string enc = "received=100;waiting-for-endpoint=200;" + EncodeStamp("dispatched", 300) + "custom=400;" +
                    EncodeStamp("success", 500);
  EXPECT_EQ(
      Decode(enc),
      (Stamps{
          {"received", 100}, {"waiting-for-endpoint", 200}, {"dispatched", 300}, {"custom", 400}, {"success", 500}}));
}

TEST(TaskCodecTest, ATruncatedOrForeignEntryEndsTheParseWithoutReadingPastIt) {
  std::string whole = EncodeStamp("received", 1) + EncodeStamp("dispatched", 2);
  for (size_t cut = 10; cut < whole.size(); ++cut) {
    EXPECT_EQ(Decode(whole.substr(0, cut)), (Stamps{{"received", 1}})) << "cut at " << cut;
  }
  std::string named = EncodeStamp("received", 1) + EncodeStamp("no-code", 2);
  EXPECT_EQ(Decode(named.substr(0, named.size() - 1)), (Stamps{{"received", 1}}));
  EXPECT_EQ(Decode(EncodeStamp("received", 1) + std::string(1, '\x1f') + EncodeStamp("success", 2)),
            (Stamps{{"received", 1}}));
  // A stage name over 255 bytes is cut to 255.
  EXPECT_EQ(Decode(EncodeStamp(std::string(300, 's'), 7)), (Stamps{{std::string(255, 's'), 7}}));
}

}  // namespace
}  // namespace loom::service
