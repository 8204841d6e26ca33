#include "bench/bench_support.h"

#include <gtest/gtest.h>

namespace loom::bench {
namespace {

void Stamp(v1::TaskRecord* r, const std::string& stage, int64_t unix_nanos) {
  auto* t = r->add_timestamps();
  t->set_stage(stage);
  t->set_unix_nanos(unix_nanos);
}

TEST(AddHopsTest, EachHopIsTheTimeBetweenItsTwoStagesAndAHopMissingAStageIsSkipped) {
  v1::TaskRecord r;
  Stamp(&r, "received", 11'000);
  Stamp(&r, "waiting-for-endpoint", 12'000);
  Stamp(&r, "dispatched", 13'000);
  Stamp(&r, "dispatched", 15'000);  // dispatched again (a retry): the last time counts
  Stamp(&r, "service_committed", 16'000);
  Stamp(&r, "service_sent", 16'500);
  Stamp(&r, "success", 30'000);
  Stamp(&r, "result_committed", 31'000);
  std::map<std::string, std::vector<double>> hops;
  AddHops(r, 10'000, 34'000, &hops);
  EXPECT_EQ(hops["client -> service"], std::vector<double>{1.0});
  EXPECT_EQ(hops["service: check, wait to commit"], std::vector<double>{1.0});
  EXPECT_EQ(hops["service: queue -> dispatch"], std::vector<double>{3.0});
  EXPECT_EQ(hops["service: Redis commit"], std::vector<double>{1.0});
  EXPECT_EQ(hops["service: hand-off, send"], std::vector<double>{0.5});
  EXPECT_EQ(hops["service: Redis commit (result)"], std::vector<double>{1.0});
  EXPECT_EQ(hops["service -> client"], std::vector<double>{3.0});
  EXPECT_FALSE(hops.contains("service -> endpoint"));  // no endpoint_received stamp
  EXPECT_FALSE(hops.contains("kernel"));
  EXPECT_FALSE(hops.contains("endpoint -> service"));  // no endpoint_result stamp
  // A client time of 0 is missing; a second record adds a sample to each hop it has.
  AddHops(r, 0, 0, &hops);
  EXPECT_EQ(hops["client -> service"].size(), 1u);
  EXPECT_EQ(hops["service -> client"].size(), 1u);
  EXPECT_EQ(hops["service: Redis commit"], (std::vector<double>{1.0, 1.0}));
}

TEST(PercentileTest, NearestRankAndZeroForNoSamples) {
  EXPECT_EQ(Percentile({}, 50), 0);
  EXPECT_EQ(Percentile({3, 1, 2}, 50), 2);
  EXPECT_EQ(Percentile({3, 1, 2}, 100), 3);
  EXPECT_EQ(Percentile({3, 1, 2}, 0), 1);
}

// INFO commandstats as Redis 7 writes it (CRLF lines, a section header, a subcommand's name).
TEST(ParseCommandStatsTest, ReadsCallsAndMicrosecondsPerCommand) {
  const auto stats = ParseCommandStats(
      "# Commandstats\r\n"
      "cmdstat_hset:calls=101024,usec=100391,usec_per_call=0.99,rejected_calls=0,failed_calls=0\r\n"
      "cmdstat_config|resetstat:calls=1,usec=77,usec_per_call=77.00,rejected_calls=0,failed_calls=0\r\n"
      "not a stat line\r\n");
  ASSERT_EQ(stats.size(), 2u);
  EXPECT_EQ(stats.at("hset").calls, 101024);
  EXPECT_EQ(stats.at("hset").usec, 100391);
  EXPECT_EQ(stats.at("config|resetstat").calls, 1);
  EXPECT_TRUE(ParseCommandStats("").empty());
}

}  // namespace
}  // namespace loom::bench
