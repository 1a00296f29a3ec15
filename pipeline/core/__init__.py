"""What every stage uses.

- `errors.StarError`: the one exception for errors a user can cause.
- `files`: reading the files a user names, with one-line errors; atomic writes.
- `differences`: what differs between two configurations, said one way.
- `progress.progress_bar`: the progress bar of every long command.
- `text`: byte counts and shortened values in reports; `jsonable`: values as JSON stores them.
- `rng`: seeding, saving and restoring a process's random state; `devices`: the torch device of a command.
"""
