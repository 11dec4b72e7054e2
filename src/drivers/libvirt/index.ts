// The libvirt provider's public API (see README.md beside this file).
//
//   createLibvirtWorld({store | pins, log?, provider?: {stateDir?, watchEvents?, serialLogDir?}})
//     -> {provider, postgres, pool, libvirt: LibvirtProvider, faults, shell}
//   LibvirtProvider: observeMachines / ensureMachine / fenceMachine / deleteMachine /
//     deleteClusterResources / close (the ProviderDriver contract), plus hostRef(spec, node|'pool'),
//     describeMachine, ensurePoolHost, observePoolHost, domainStatus, startMachine, setLink,
//     onEvent(cb) -> unsubscribe, watch(spec), domainType(uri, requested).

export {
  LibvirtProvider,
  createLibvirtProvider,
  DEFAULT_STATE_DIR,
  type LibvirtProviderOptions,
  type MachineRef,
  type DomainStatus,
} from './provider.js';
export { createLibvirtWorld, type LibvirtWorld, type LibvirtWorldOptions } from './world.js';
export {
  POOL_HOST,
  PGOP_XMLNS,
  POOL_HOST_SIZE,
  domainName,
  volumeNames,
  macFor,
  machinePlan,
  allMachines,
  clusterUris,
  uriOf,
  type MachinePlan,
} from './names.js';
export {
  renderDomainXml,
  renderNetworkXml,
  renderPoolXml,
  renderVolumeXml,
  type DomainType,
  type DomainXmlInput,
  type NetworkXmlInput,
} from './xml.js';
export {
  renderSeed,
  renderUserData,
  renderMetaData,
  renderNetworkConfig,
  buildSeedIso,
  type SeedInput,
  type SeedFiles,
} from './cloudinit.js';
export { parseEventLine, EventWatcher, type LibvirtEvent, type LifecycleKind } from './events.js';
export { probeAccel, localKvmWorks, resolveDomainType, parseUri, kvmPermissionAdvice } from './accel.js';
