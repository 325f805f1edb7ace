"""`llava-kit reproduce`: a published run's record -> the same inputs, stages and eval -> a verdict."""
