module svdm/bench/goserver

go 1.21
