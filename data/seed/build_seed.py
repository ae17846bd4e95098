"""Build data/seed/prompts.jsonl: the small labelled prompt set behind the default ensemble's first router.

Sources: HumanEval (OpenAI, MIT, data/seed/HumanEval.jsonl.gz), GSM8K test (via RouteLLM's copy, MIT/Apache-2.0,
data/routellm/gsm8k/test.jsonl), plus the hand-written code requests and small talk below.
Run: python data/seed/build_seed.py   (deterministic: seed 7)
"""
import gzip
import json
import random
import re
from pathlib import Path

HERE = Path(__file__).parent
SEED = 7
N_HUMANEVAL, N_GSM8K = 30, 30

# Natural-language code requests, each with a unit test the answer must pass (entry point, test body).
CODE_REQUESTS = [
    ("Write a Python function reverse_string(s) that returns the string reversed.", "reverse_string",
     "assert reverse_string('abc') == 'cba'\nassert reverse_string('') == ''"),
    ("Write a Python function is_palindrome(s) that returns True if s reads the same backwards, ignoring case.",
     "is_palindrome", "assert is_palindrome('Level')\nassert not is_palindrome('hello')"),
    ("Write a Python function factorial(n) that returns n! for a non-negative integer n.", "factorial",
     "assert factorial(0) == 1\nassert factorial(5) == 120"),
    ("Write a Python function fizzbuzz(n) that returns a list of strings for 1..n with 'Fizz', 'Buzz' and 'FizzBuzz'.",
     "fizzbuzz", "assert fizzbuzz(5) == ['1', '2', 'Fizz', '4', 'Buzz']\nassert fizzbuzz(15)[-1] == 'FizzBuzz'"),
    ("Write a Python function count_vowels(text) that returns how many vowels (a, e, i, o, u) the text has, any case.",
     "count_vowels", "assert count_vowels('Hello World') == 3\nassert count_vowels('xyz') == 0"),
    ("Implement a Python function fibonacci(n) returning the n-th Fibonacci number, with fibonacci(0) == 0.",
     "fibonacci", "assert fibonacci(0) == 0\nassert fibonacci(1) == 1\nassert fibonacci(10) == 55"),
    ("Write a Python function second_largest(nums) that returns the second largest distinct value in a list.",
     "second_largest", "assert second_largest([3, 1, 4, 4, 2]) == 3\nassert second_largest([10, 9]) == 9"),
    ("Write Python code for a function flatten(nested) that flattens a list of lists one level deep.", "flatten",
     "assert flatten([[1, 2], [3], []]) == [1, 2, 3]"),
    ("Create a Python function word_count(text) that returns a dict mapping each lower-cased word to its count.",
     "word_count", "assert word_count('a b A') == {'a': 2, 'b': 1}"),
    ("Write a Python function is_prime(n) that returns True when n is a prime number.", "is_prime",
     "assert is_prime(2) and is_prime(13)\nassert not is_prime(1) and not is_prime(15)"),
    ("Write a Python function merge_sorted(a, b) that merges two sorted lists into one sorted list.", "merge_sorted",
     "assert merge_sorted([1, 3, 5], [2, 4]) == [1, 2, 3, 4, 5]"),
    ("Write a Python function celsius_to_fahrenheit(c) that converts a temperature.", "celsius_to_fahrenheit",
     "assert celsius_to_fahrenheit(100) == 212\nassert celsius_to_fahrenheit(0) == 32"),
    ("Write a Python function unique_in_order(items) that removes duplicates but keeps the first occurrence order.",
     "unique_in_order", "assert unique_in_order([3, 1, 3, 2, 1]) == [3, 1, 2]"),
    ("Write a Python function binary_search(items, target) that returns the index of target in a sorted list, or -1.",
     "binary_search", "assert binary_search([1, 3, 5, 7], 5) == 2\nassert binary_search([1, 3], 4) == -1"),
    ("Write a Python function capitalize_words(sentence) that upper-cases the first letter of every word.",
     "capitalize_words", "assert capitalize_words('hello big world') == 'Hello Big World'"),
]

SMALL_TALK = [
    "Hi!", "Hello there!", "Good morning!", "Hey, how are you?", "Hi, how's it going?", "Good evening, friend.",
    "Thanks a lot!", "Thank you for your help.", "Bye, see you later!", "Have a nice day!", "What's up?",
    "Nice to meet you.", "Hello, who are you?", "How are you doing today?", "Good night!", "Hey there, buddy!",
    "Greetings!", "Howdy!", "Hi! I just wanted to say hello.", "Good afternoon!", "Cheers, thanks!",
    "Hello! Hope you're having a good day.", "Yo!", "Hiya!", "Morning! How was your weekend?",
    "Thanks, that was helpful.", "See you tomorrow!", "Hey! Long time no see.", "Hello, nice to talk to you.",
    "Hi, can you say something nice?",
]


def code_prompt(stub: str) -> str:
    return ("Complete the following Python function. Reply with the whole function in one ```python block.\n\n"
            f"```python\n{stub.strip()}\n```")


def main() -> None:
    rng = random.Random(SEED)
    rows = []
    humaneval = [json.loads(line) for line in gzip.open(HERE / "HumanEval.jsonl.gz", "rt")]
    for item in rng.sample(humaneval, N_HUMANEVAL):
        rows.append({"sample_id": item["task_id"].replace("/", "-").lower(), "eval_name": "humaneval", "task": "code",
                     "prompt": code_prompt(item["prompt"]),
                     "reference": {"prelude": item["prompt"], "entry_point": item["entry_point"],
                                   "test": item["test"] + f"\ncheck({item['entry_point']})\n"}})
    for i, (request, entry, test) in enumerate(CODE_REQUESTS):
        rows.append({"sample_id": f"coderequest-{i}", "eval_name": "code-requests", "task": "code", "prompt": request,
                     "reference": {"prelude": "", "entry_point": entry, "test": test + "\n"}})
    gsm8k = [json.loads(line) for line in open(HERE.parent / "routellm" / "gsm8k" / "test.jsonl")]
    for i in sorted(rng.sample(range(len(gsm8k)), N_GSM8K)):
        answer = re.sub(r"[,$]", "", gsm8k[i]["answer"].split("####")[-1]).strip()
        rows.append({"sample_id": f"gsm8k-{i}", "eval_name": "gsm8k", "task": "math",
                     "prompt": gsm8k[i]["question"] + "\nSolve it step by step, then give the final number.",
                     "reference": {"number": answer}})
    for i, text in enumerate(SMALL_TALK):
        rows.append({"sample_id": f"smalltalk-{i}", "eval_name": "small-talk", "task": "chat", "prompt": text,
                     "reference": None})
    with open(HERE / "prompts.jsonl", "w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    print(f"wrote {len(rows)} prompts to {HERE / 'prompts.jsonl'}")


if __name__ == "__main__":
    main()
