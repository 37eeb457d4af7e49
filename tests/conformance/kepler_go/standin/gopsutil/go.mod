module github.com/shirou/gopsutil

go 1.19
