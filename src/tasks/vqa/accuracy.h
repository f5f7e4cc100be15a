#pragma once
// The official VQA accuracy (vqaTools/vqaEval.py, as ALBEF and LAVIS ship
// it): answers normalised (punctuation, number words, articles,
// contractions), each question scored min(#humans who gave the answer / 3,
// 1) averaged over the leave-one-out subsets of its human answers.

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace albef::vqa {

/// vqaEval's processPunctuation, quirks included: a punctuation mark is
/// deleted when it touches a space (or the text has a digit,digit) and is a
/// space otherwise; then at most 32 '.' not followed by a digit are deleted.
std::string process_punctuation(const std::string& text);

/// vqaEval's processDigitArticle: lower-case, split on whitespace, number
/// words to digits ("two" -> "2", "none" -> "0"), articles dropped,
/// contractions restored ("dont" -> "don't").
std::string process_digit_article(const std::string& text);

/// The accuracy of `answer` against the human answers of one question, in
/// [0, 1]: the answer is normalised (strip, process_punctuation,
/// process_digit_article); when the human answers differ, each gets
/// process_punctuation; then min(1, matches among the others / 3) averaged
/// over leaving out each human answer in turn.
double question_accuracy(const std::string& answer, std::vector<std::string> human_answers);

/// One scored question.
struct ScoredAnswer {
  std::string answer;
  std::vector<std::string> human_answers;
  std::string answer_type;  ///< "yes/no", "number", "other", or empty
};

/// {"overall": %, "perAnswerType": {type: %}} rounded to 2 decimals as
/// vqaEval reports them, plus "questions": the count.
nlohmann::json accuracy_report(const std::vector<ScoredAnswer>& answers);

}  // namespace albef::vqa
