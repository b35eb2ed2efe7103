module svdm/bench/d8client

go 1.21
