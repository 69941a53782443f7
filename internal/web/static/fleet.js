// Skywatch fleet panel: the live total and the VMs by region, from the
// relay's "fleet" frames (sent when the fleet changes, at most every few
// seconds; see docs/protocol.md). app.js hands each frame to
// skywatchFleet.update; nothing here polls.
"use strict";

window.skywatchFleet = (() => {
  const total = document.getElementById("fleet-total");
  const regions = document.getElementById("fleet-regions");
  const fmt = new Intl.NumberFormat();

  function update(frame) {
    const vms = Array.isArray(frame.vms) ? frame.vms : [];
    const clients = Number(frame.clients) || 0;
    total.dataset.clients = String(clients);
    total.dataset.vms = String(vms.length);
    const byRegion = new Map();
    for (const v of vms) {
      if (!byRegion.has(v.region)) byRegion.set(v.region, []);
      byRegion.get(v.region).push(v);
    }
    total.textContent = fmt.format(clients) + " watching on " + vms.length +
      (vms.length === 1 ? " VM" : " VMs") + " in " + [...byRegion.keys()].join(", ");

    const items = [];
    for (const [region, list] of byRegion) {
      const li = document.createElement("li");
      li.dataset.region = region;
      const name = document.createElement("strong");
      name.textContent = region;
      li.append(name, " ");
      for (const v of list) {
        const vm = document.createElement("span");
        vm.className = "vm" + (v.duplicate ? " duplicate" : "");
        vm.dataset.vm = v.vm;
        vm.dataset.clients = String(v.clients);
        vm.title = v.duplicate ? "two processes share this VM id" : "";
        vm.textContent = v.vm + " (" + fmt.format(v.clients) + ")";
        li.append(vm, " ");
      }
      items.push(li);
    }
    regions.replaceChildren(...items);
  }

  return { update };
})();
