// vcsim for the vSphere test peer: govmomi 0.24.2's simulator (VPX model) on a plain-HTTP
// loopback port, behind the peer's TLS front (tests/peers/vsphere/front.py). Besides the
// SOAP API it serves a small JSON API under /_vcsim/ that the front (and only the front)
// uses to read inventory and to set what the simulator cannot: disk changeIds, tools state,
// datastore space, and tasks that fail or take time. Objects are mutated in place under the
// registry's lock; replacing them crashed the simulator (PEERS.md).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"net/url"
	"reflect"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

type disk struct {
	Key      int32  `json:"key"`
	Label    string `json:"label"`
	File     string `json:"file"`
	Capacity int64  `json:"capacity"`
	ChangeID string `json:"change_id"`
}

type snapshot struct {
	Ref    string `json:"ref"`
	Parent string `json:"parent"`
	Name   string `json:"name"`
}

type vmInfo struct {
	Ref       string     `json:"ref"`
	Name      string     `json:"name"`
	Power     string     `json:"power"`
	CBT       bool       `json:"cbt"`
	Path      string     `json:"path"`
	Tools     string     `json:"tools"`
	Disks     []disk     `json:"disks"`
	Snapshots []snapshot `json:"snapshots"`
}

func disks(devices []types.BaseVirtualDevice) []disk {
	out := []disk{}
	for _, d := range devices {
		if vd, ok := d.(*types.VirtualDisk); ok {
			x := disk{Key: vd.Key, Capacity: vd.CapacityInBytes}
			if vd.DeviceInfo != nil {
				x.Label = vd.DeviceInfo.GetDescription().Label
			}
			if b, ok := vd.Backing.(*types.VirtualDiskFlatVer2BackingInfo); ok {
				x.File, x.ChangeID = b.FileName, b.ChangeId
			}
			out = append(out, x)
		}
	}
	return out
}

func walk(tree []types.VirtualMachineSnapshotTree, parent string, out *[]snapshot) {
	for _, t := range tree {
		*out = append(*out, snapshot{Ref: t.Snapshot.Value, Parent: parent, Name: t.Name})
		walk(t.ChildSnapshotList, t.Snapshot.Value, out)
	}
}

func listVMs(w http.ResponseWriter, r *http.Request) {
	out := []vmInfo{}
	for _, e := range simulator.Map.All("VirtualMachine") {
		vm := e.(*simulator.VirtualMachine)
		simulator.Map.WithLock(vm, func() {
			info := vmInfo{Ref: vm.Self.Value, Name: vm.Name, Power: string(vm.Runtime.PowerState),
				Snapshots: []snapshot{}, Disks: []disk{}}
			if vm.Guest != nil {
				info.Tools = vm.Guest.ToolsRunningStatus
			}
			if vm.Config != nil {
				info.CBT = vm.Config.ChangeTrackingEnabled != nil && *vm.Config.ChangeTrackingEnabled
				info.Path = vm.Config.Files.VmPathName
				info.Disks = disks(vm.Config.Hardware.Device)
			}
			if vm.Snapshot != nil {
				walk(vm.Snapshot.RootSnapshotList, "", &info.Snapshots)
			}
			out = append(out, info)
		})
	}
	reply(w, out)
}

// setDisk sets a disk backing's changeId (and fileName when given) on a VM's current config
// or on a snapshot's config. A snapshot's config is a shallow copy of the VM's (the device
// pointers are shared), so the snapshot gets its own copies of the slice and of the disk.
func setDisk(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Type, Ref, ChangeID, File, Label string
		Parents                          []string // the backing's parent chain, nearest first
		Key                              int32
		Capacity                         int64
	}
	if !decode(w, r, &req) {
		return
	}
	obj := simulator.Map.Get(types.ManagedObjectReference{Type: req.Type, Value: req.Ref})
	var config *types.VirtualMachineConfigInfo
	switch o := obj.(type) {
	case *simulator.VirtualMachine:
		config = o.Config
	case *simulator.VirtualMachineSnapshot:
		config = &o.Config
	default:
		http.Error(w, "no such object", http.StatusNotFound)
		return
	}
	simulator.Map.WithLock(obj, func() {
		devices := append([]types.BaseVirtualDevice(nil), config.Hardware.Device...)
		for i, d := range devices {
			if vd, ok := d.(*types.VirtualDisk); ok && vd.Key == req.Key {
				if b, ok := vd.Backing.(*types.VirtualDiskFlatVer2BackingInfo); ok {
					nd, nb := *vd, *b
					nb.ChangeId = req.ChangeID
					if req.File != "" {
						nb.FileName = req.File
						nb.Parent = nil
						for i := len(req.Parents) - 1; i >= 0; i-- {
							p := *b
							p.FileName, p.ChangeId, p.Parent = req.Parents[i], "", nb.Parent
							nb.Parent = &p
						}
					}
					nd.Backing = &nb
					if req.Capacity > 0 {
						nd.CapacityInBytes, nd.CapacityInKB = req.Capacity, req.Capacity/1024
					}
					if req.Label != "" && nd.DeviceInfo != nil {
						info := *nd.DeviceInfo.GetDescription()
						info.Label = req.Label
						nd.DeviceInfo = &info
					}
					devices[i] = &nd
				}
			}
		}
		config.Hardware.Device = devices
	})
	reply(w, map[string]bool{"ok": true})
}

func setTools(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Ref     string
		Running bool
	}
	if !decode(w, r, &req) {
		return
	}
	vm, ok := simulator.Map.Get(types.ManagedObjectReference{Type: "VirtualMachine", Value: req.Ref}).(*simulator.VirtualMachine)
	if !ok {
		http.Error(w, "no such vm", http.StatusNotFound)
		return
	}
	running, status := types.VirtualMachineToolsRunningStatusGuestToolsNotRunning, types.VirtualMachineToolsStatusToolsNotRunning
	if req.Running {
		running, status = types.VirtualMachineToolsRunningStatusGuestToolsRunning, types.VirtualMachineToolsStatusToolsOk
	}
	simulator.Map.WithLock(vm, func() {
		if vm.Guest == nil {
			vm.Guest = &types.GuestInfo{}
		}
		simulator.Map.Update(vm, []types.PropertyChange{
			{Name: "guest.toolsRunningStatus", Val: string(running)},
			{Name: "guest.toolsStatus", Val: status},
		})
	})
	reply(w, map[string]bool{"ok": true})
}

func setDatastore(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name           string
		Capacity, Free int64
	}
	if !decode(w, r, &req) {
		return
	}
	for _, e := range simulator.Map.All("Datastore") {
		ds := e.(*simulator.Datastore)
		if ds.Name != req.Name {
			continue
		}
		simulator.Map.WithLock(ds, func() {
			info := ds.Info.GetDatastoreInfo()
			info.FreeSpace, info.MaxFileSize = req.Free, req.Free
			simulator.Map.Update(ds, []types.PropertyChange{
				{Name: "summary.capacity", Val: req.Capacity},
				{Name: "summary.freeSpace", Val: req.Free},
			})
		})
		reply(w, map[string]bool{"ok": true})
		return
	}
	http.Error(w, "no such datastore", http.StatusNotFound)
}

// task creates a task of the simulator's own kind on an entity that runs for DelayMs and
// then fails with Fault (a vim25 fault type name) or succeeds with Result: what the front
// answers instead of the real task when a test asks for a slow or failing task.
func task(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Type, Ref, Name, Fault, Message, ResultType, Result string
		DelayMs                                             int
	}
	if !decode(w, r, &req) {
		return
	}
	var fault types.BaseMethodFault
	if req.Fault != "" {
		t, ok := types.TypeFunc()(req.Fault)
		if !ok {
			http.Error(w, "unknown fault type "+req.Fault, http.StatusBadRequest)
			return
		}
		fault, ok = reflect.New(t).Interface().(types.BaseMethodFault)
		if !ok {
			http.Error(w, req.Fault+" is not a fault", http.StatusBadRequest)
			return
		}
	}
	entity := &mo.ManagedEntity{}
	entity.Self = types.ManagedObjectReference{Type: req.Type, Value: req.Ref}
	t := simulator.CreateTask(entity, req.Name, func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		time.Sleep(time.Duration(req.DelayMs) * time.Millisecond)
		if fault != nil {
			return nil, fault
		}
		if req.Result != "" {
			return types.ManagedObjectReference{Type: req.ResultType, Value: req.Result}, nil
		}
		return nil, nil
	})
	if req.Message != "" {
		t.Info.Description = &types.LocalizableMessage{Key: "peer", Message: req.Message}
	}
	go t.Run()
	reply(w, map[string]string{"ref": t.Self.Value})
}

func taskInfo(w http.ResponseWriter, r *http.Request) {
	t, ok := simulator.Map.Get(types.ManagedObjectReference{Type: "Task", Value: r.URL.Query().Get("ref")}).(*simulator.Task)
	if !ok {
		http.Error(w, "no such task", http.StatusNotFound)
		return
	}
	out := map[string]string{}
	simulator.Map.WithLock(t, func() {
		out["state"] = string(t.Info.State)
		if ref, ok := t.Info.Result.(types.ManagedObjectReference); ok {
			out["result"] = ref.Value
		}
		if t.Info.Error != nil {
			out["error"] = reflect.TypeOf(t.Info.Error.Fault).Elem().Name()
		}
	})
	reply(w, out)
}

func decode(w http.ResponseWriter, r *http.Request, v interface{}) bool {
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return false
	}
	return true
}

func reply(w http.ResponseWriter, v interface{}) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "host:port for plain HTTP")
	user := flag.String("user", "user", "the one valid user name")
	password := flag.String("password", "pass", "its password")
	flag.Parse()

	model := simulator.VPX()
	if err := model.Create(); err != nil {
		log.Fatal(err)
	}
	model.Service.TLS = nil
	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*user, *password)}
	mux := http.NewServeMux()
	mux.HandleFunc("/_vcsim/vms", listVMs)
	mux.HandleFunc("/_vcsim/disk", setDisk)
	mux.HandleFunc("/_vcsim/tools", setTools)
	mux.HandleFunc("/_vcsim/datastore", setDatastore)
	mux.HandleFunc("/_vcsim/task", task)
	mux.HandleFunc("/_vcsim/taskinfo", taskInfo)
	model.Service.ServeMux = mux
	server := model.Service.NewServer()
	// The front waits for this line: it carries the port when -listen asked for port 0.
	fmt.Printf("vcsim listening on %s\n", server.URL.Host)
	select {}
}
