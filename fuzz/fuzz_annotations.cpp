// Every task's annotation reader on the same JSON bytes.
#include "albef/data/annotations.h"
#include "fuzz_input.h"
#include "tasks/grounding/refer.h"
#include "tasks/nlvr/data.h"
#include "tasks/ve/data.h"
#include "tasks/vqa/data.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using albef::fuzz::expect_success_or_albef_error;
  const albef::fuzz::InputFile input(data, size);
  const std::vector<std::string> files = {input.path()};
  expect_success_or_albef_error("pretrain", [&] { albef::data::load_pretrain_dataset(files); });
  expect_success_or_albef_error("retrieval train", [&] { albef::data::load_retrieval_train_dataset(files, "img"); });
  expect_success_or_albef_error("retrieval eval", [&] { albef::data::load_retrieval_eval_dataset(input.path(), "img"); });
  expect_success_or_albef_error("vqa train", [&] { albef::vqa::load_train_set(files, "vqa", "vg"); });
  expect_success_or_albef_error("vqa test", [&] { albef::vqa::load_test_set(input.path(), "vqa", "vg"); });
  expect_success_or_albef_error("vqa answers", [&] { albef::vqa::load_answer_list(input.path()); });
  expect_success_or_albef_error("nlvr", [&] { albef::nlvr::load_pairs(files, "img"); });
  expect_success_or_albef_error("ve", [&] { albef::ve::load_pairs(files, "img"); });
  expect_success_or_albef_error("grounding", [&] { albef::grounding::load_expressions(files, "img", true); });
  expect_success_or_albef_error("detections", [&] {
    albef::grounding::Refer refer;
    refer.image_sizes[1] = {480, 640};
    refer.image_sizes[42] = {100, 200};
    albef::grounding::load_detections(input.path(), refer);
  });
  return 0;
}
