"""`python -m pspo_eval …` (and `accelerate launch -m pspo_eval train …`)."""

from pspo_eval.cli import main

if __name__ == "__main__":
    main()
